"""The policy over a direct call's configuration after it started.

In direct mode the browser's ``session.update`` goes straight to the upstream: voxgate sees
only the upstream's ``session.updated``. The session's own connection mirrors the call's
configuration and holds the credential's `PolicyGuard` (the policy and any client secret's
binding, as admission set it), so the checks are the ones the relay applies to a client's
``session.update``: each reported configuration is applied to the mirror as a patch, and a
policy code (`POLICY_CODES`) is a breach, which leaves the mirror as it was.

Settings the local mirror does not take (an upstream's own fields, or values it does not
know) are no breach: they are skipped, and the rest is still checked.
"""

from __future__ import annotations

import logging
from typing import Any

from ..control.guard import POLICY_CODES
from ..protocol.carry import configure_what_fits, session_patch
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError

log = logging.getLogger(__name__)


def adopt(conn: RealtimeConnection, session: dict[str, Any]) -> None:
    """Mirror the call's configuration as the upstream first reports it (what voxgate gave it
    at call creation, in the upstream's words), unchecked: later reports are compared with
    it, so a difference in how the upstream writes a field is not taken for a change."""
    guard, conn.guard = conn.guard, None
    try:
        dropped = configure_what_fits(conn, session_patch(session))
    finally:
        conn.guard = guard
    if dropped:
        log.info("session %s: upstream settings not mirrored: %s", conn.session_id, dropped)


def breach(conn: RealtimeConnection, session: dict[str, Any]) -> ProtocolError | None:
    """Apply a reported configuration to the mirror through its guard: the policy's or the
    binding's refusal if it breaks them (the mirror then stays as it was), else None."""
    patch = session_patch(session)
    while True:
        try:
            conn.configure(patch)
            return None
        except ProtocolError as exc:
            if exc.code in POLICY_CODES:
                return exc
            field = (exc.param or "").removeprefix("session.").split(".")[0].split("[")[0]
            if field not in patch or field in ("type", ""):
                log.info(
                    "session %s: upstream configuration not mirrored: %s", conn.session_id, exc
                )
                return None
            patch = {k: v for k, v in patch.items() if k != field}


def reverting(allowed: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """The ``session.update`` body that puts back each top-level field of the last allowed
    configuration that the reported one changed."""
    before, after = session_patch(allowed), session_patch(reported)
    body = {k: v for k, v in before.items() if after.get(k) != v}
    body["type"] = before.get("type", "realtime")
    return body
