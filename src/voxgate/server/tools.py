"""Server tools from settings: the registry built at start-up, and each session's broker."""

from __future__ import annotations

import logging

from ..control.identity import Principal
from ..session.clock import SystemClock
from ..session.tool_exec import ToolRegistry
from ..session.tool_flow import SessionTools
from ..session.tools import ToolBroker
from ..settings import Settings
from .state import AppState

log = logging.getLogger(__name__)


def server_tools(settings: Settings) -> ToolRegistry | None:
    """The declared tools, prepared (header variables resolved, Python targets imported);
    raises ValueError naming the tool whose definition cannot work."""
    if not settings.tools:
        return None
    try:
        registry = ToolRegistry(settings.tools, signing_secret=settings.tools_signing_secret)
    except KeyError as exc:  # a ${VARIABLE} in a header that is not set
        raise ValueError(str(exc.args[0])) from None
    if not settings.tools_signing_secret and any(s.kind == "http" for s in settings.tools):
        log.warning(
            "HTTP tools are configured without tools_signing_secret: their calls carry no "
            "X-Voxgate-Signature, so a tool service cannot tell them from anyone else's"
        )
    log.info("server tools: %s", ", ".join(registry.specs))
    return registry


def session_tools(state: AppState, principal: Principal, session_id: str) -> SessionTools | None:
    if state.tools is None:
        return None
    broker = ToolBroker(
        state.tools, principal, session_id, SystemClock(), audit=state.controls.recorder
    )
    return SessionTools(broker)
