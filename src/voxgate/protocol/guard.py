"""A hook through which the controls veto configuration changes: every ``session.update``
(and the session a call or client secret starts with) and every ``response.create``'s
overrides pass it before anything changes. The protocol stays free of policies; whoever
builds the connection supplies one."""

from __future__ import annotations

from typing import Any, Protocol

from .response_params import ResponseParams
from .session import SessionConfig


class ConfigGuard(Protocol):
    def check_session(self, before: SessionConfig, after: SessionConfig, patch: Any) -> None:
        """Raise ProtocolError to refuse moving from ``before`` to ``after``."""

    def check_response(self, session: SessionConfig, params: ResponseParams) -> None:
        """Raise ProtocolError to refuse a response with these overrides."""
