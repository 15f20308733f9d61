"""Approval requests of MCP calls, held to the server tools' confirmation rules
(``control/tools/confirm.py``) on the session's clock.

- A request is a pending action, opened when its ``mcp_approval_request`` item joins the
  conversation, with the arguments of the request and an expiry of ``CONFIRM_EXPIRY_S``.
- An ``mcp_approval_response`` (client or sideband) settles it once: approved or declined,
  or expired when it came after the expiry (the client gets an ``approval_expired`` error).
  An approved call runs at the start of the next response (``mcp.McpCallRunner``).
- Unanswered at the expiry, or cut by a barge-in into the response that asked (the same two
  places as the server tools' read-back), it is cancelled: a server-made
  ``mcp_approval_response`` (reason ``expired`` / ``interrupted``) shows how it ended, and a
  later answer is refused (``approval_expired`` / ``approval_cancelled``).
- Only that item approves an MCP call, never the user's voice (as a server tool with
  ``spoken_confirmation = false``): the next turn neither approves nor cancels it.
Every settlement is one audit record (``awaiting_confirmation``, ``approved``, ``declined``,
``expired``, ``interrupted``), with the channel as for server tools.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..control.tools import CONFIRM_EXPIRY_S, Confirmations, PendingAction
from ..protocol import mcp_flow
from ..protocol.commands import ToolApproval
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.mcp import McpServer
from ..protocol.mcp_items import McpApprovalRequest
from .clock import Clock, SystemClock
from .mcp_redact import secret_names

Progress = Callable[[RealtimeConnection], list[Output]]
Post = Callable[[Progress], Awaitable[None]]
# record(server label, tool, arguments JSON, sensitive names, **detail): SessionMcp.record.
Record = Callable[..., None]
EXPIRED = f"nobody answered it within {CONFIRM_EXPIRY_S:g} s"
INTERRUPTED = "the user interrupted the response that asked for it"


@dataclass
class McpApprovals:
    record: Record
    clock: Clock = field(default_factory=SystemClock)
    confirmations: Confirmations = field(default_factory=Confirmations)
    # The server of each open request, and its expiry timer.
    _servers: dict[str, McpServer] = field(default_factory=dict)
    _timers: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def asked(
        self, server: McpServer, request: McpApprovalRequest, response_id: str, post: Post
    ) -> None:
        """The request joined the conversation (call from the main loop): open its action,
        audit it, and start its expiry."""
        arguments = _object(request.arguments)
        action = self.confirmations.hold(
            request.id or "",
            request.name,
            arguments,
            sensitive=secret_names(arguments, server.sensitive_args),
            now=self.clock.monotonic(),
        )
        action.readback_response_id = response_id
        self._servers[action.id] = server
        self._audit(
            action, "awaiting_confirmation", summary=action.summary, arguments_digest=action.digest
        )
        timer = asyncio.get_running_loop().create_task(
            self._expire(action, post), name=f"mcp-approval-expiry-{action.id}"
        )
        self._timers[action.id] = timer
        timer.add_done_callback(lambda _: self._timers.pop(action.id, None))

    def approval(self, conn: RealtimeConnection, cmd: ToolApproval) -> list[Output]:
        """The client's (or a sideband's) answer, already in the conversation."""
        rid = cmd.approval_request_id
        action = self.confirmations.get(rid)
        if action is None:  # not an MCP request of this session (a server tool's, a relay's)
            return []
        _, how = self.confirmations.settle(rid, self.clock.monotonic(), cmd.approve)
        self._stop(rid)
        self._audit(action, how, channel="event", words=cmd.reason)
        if how == "expired":  # before the timer's turn came: too late all the same
            return mcp_flow.answered_late(conn, rid, EXPIRED)
        return []

    def interrupted(self, conn: RealtimeConnection, response_id: str) -> list[Output]:
        """A response was cancelled or cut while playing: requests it asked are cancelled."""
        out: list[Output] = []
        for action in self.confirmations.all():
            if action.readback_response_id == response_id:
                out += self._lapse(conn, action, "interrupted")
        return out

    def close(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()

    async def _expire(self, action: PendingAction, post: Post) -> None:
        await self.clock.sleep(action.expires_at - self.clock.monotonic())
        await post(lambda c: self._lapse(c, action, "expired"))

    def _lapse(self, conn: RealtimeConnection, action: PendingAction, how: str) -> list[Output]:
        if self.confirmations.get(action.id) is not action:
            return []  # settled meanwhile
        self.confirmations.drop(action.id)
        if how == "interrupted":
            self._stop(action.id)
            out = mcp_flow.lapse(conn, action.id, "approval_cancelled", INTERRUPTED)
            channel = "barge_in"
        else:
            out = mcp_flow.lapse(conn, action.id, "approval_expired", EXPIRED)
            channel = "timer"
        self._audit(action, how, channel=channel)
        return out

    def _stop(self, action_id: str) -> None:
        timer = self._timers.pop(action_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _audit(self, action: PendingAction, decision: str, **detail: Any) -> None:
        server = self._servers[action.id]
        if decision != "awaiting_confirmation":
            del self._servers[action.id]
        self.record(
            server.label,
            action.tool,
            action.arguments_json,
            server.sensitive_args,
            decision=decision,
            approval_request_id=action.id,
            **detail,
        )


def _object(arguments: str) -> dict[str, Any]:
    # The guard let only a JSON object through to an approval request.
    value = json.loads(arguments or "{}")
    return value if isinstance(value, dict) else {}
