"""The policy over a direct call's configuration after it started.

In direct mode the browser's ``session.update`` goes straight to the upstream: voxgate sees
only the upstream's ``session.updated``. The session's own connection mirrors the call's
configuration and holds the credential's `PolicyGuard` (the policy and any client secret's
binding, as admission set it), so the checks are the ones the relay applies to a client's
``session.update``: each reported configuration is applied to the mirror as a patch, and a
policy code (`POLICY_CODES`) is a breach, which leaves the mirror as it was.

The first report (``session.created``) is checked too: the browser's data channel may open,
and its ``session.update`` reach the upstream, before voxgate's sideband is attached. Settings
the local mirror does not take (an upstream's own fields, or values it does not know) are no
breach: they are skipped, and the rest is still checked.
"""

from __future__ import annotations

import logging
from typing import Any

from ..control.guard import POLICY_CODES
from ..protocol.carry import session_patch
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError

log = logging.getLogger(__name__)


def adopt_model(conn: RealtimeConnection, session: dict[str, Any]) -> None:
    """Take the model the upstream names in the call's first report as the admitted one's
    name (an upstream may name a model by its dated version): voxgate created the call with
    the admitted model, so that is the model it runs."""
    model = session.get("model")
    if isinstance(model, str) and model and model != conn.config.model:
        log.info(
            "session %s: the upstream runs %s as %s", conn.session_id, conn.config.model, model
        )
        conn.config = conn.config.model_copy(update={"model": model})


def breach(
    conn: RealtimeConnection, session: dict[str, Any], own_tools: frozenset[str] = frozenset()
) -> ProtocolError | None:
    """Apply a reported configuration to the mirror through its guard: the policy's or the
    binding's refusal if it breaks them (the mirror then stays as it was), else None.
    ``own_tools``: the server tools voxgate offers; the mirror holds the client's tools only
    (as a relayed session's does), so a binding of ``tools`` compares those."""
    patch = session_patch(session)
    if own_tools and isinstance(patch.get("tools"), list):
        patch["tools"] = [
            t for t in patch["tools"] if not (isinstance(t, dict) and t.get("name") in own_tools)
        ]
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
