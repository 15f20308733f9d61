"""MCP at run time: listing a server's tools when the connection asks, and running the
model's calls to MCP tools inside a response, through the guardrails.

The guardrails, in order, for every call the model makes (``McpGuard``):
- allowlist: a tool the entry's ``allowed_tools`` or the policy does not allow never runs;
  the model gets an error it can speak about;
- validation: arguments must be a JSON object valid for the tool's ``input_schema``
  (``jsonschema``); invalid ones never reach the server, and the model gets the message;
- limits: at most ``max_calls_per_session`` calls of one server run in a session (checked
  before the user is asked, and again when an approved call starts), at most
  ``max_concurrent`` at once (checked when a call starts); a call beyond either is refused
  (``call_limit`` / ``concurrency_limit``); each call is bounded by the server's
  ``timeout_s``;
- approval: a tool that ``require_approval`` covers becomes an ``mcp_approval_request``; it
  runs only after the user's ``mcp_approval_response`` (approve: true), once, with exactly
  the arguments the user saw, at the start of the next response; unanswered, it expires as a
  server tool's confirmation does (``mcp_approvals.py``).
Every decision is one audit record (kind "tool"), with sensitive arguments redacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..control.tools.guards import Refusal, check_arguments
from ..control.tools.spec import DEFAULT_FILLER
from ..engines.mcp import client
from ..protocol import mcp_flow
from ..protocol.commands import ResponsePlan
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.ids import new_id
from ..protocol.mcp import ApprovedCall, ListMcpTools, McpFunction, McpServer
from ..protocol.mcp_items import McpApprovalRequest, McpCall, McpToolError
from .clock import Clock, SystemClock
from .mcp_approvals import McpApprovals, Post
from .mcp_redact import redact
from .tool_exec import MAX_OUTPUT_CHARS

log = logging.getLogger(__name__)

Spawn = Callable[[Awaitable[None], str], asyncio.Task[None]]
Audit = Callable[[dict[str, Any]], None]
Say = Callable[[str], Awaitable[None]]
# As for the server's own tools (tool_flow.py): a call this slow gets a filler.
FILLER_AFTER_S = 0.8


@dataclass(frozen=True, slots=True)
class Decision:
    """What the guard says of one call: run it, ask the user first, or refuse (with the
    message the model reads and the guardrail that refused)."""

    verdict: str  # "run" | "approval" | "refused"
    message: str = ""
    guardrail: str = ""


class McpGuard:
    """The one place a call to an MCP tool is judged: the server tools' guardrails
    (``control/tools``: allowlist and JSON Schema, with their audit codes), then approval."""

    def decide(self, fn: McpFunction, arguments: str, *, approved: bool = False) -> Decision:
        label, name = fn.server.label, fn.tool.name
        if not fn.allowed:
            return Decision(
                "refused",
                f"The tool '{name}' of MCP server '{label}' is not allowed in this session "
                "(allowed_tools); it was not run. Use one of the tools offered.",
                "tool_not_allowed",
            )
        try:
            checked = check_arguments(name, fn.tool.input_schema, arguments)
        except Exception:  # a schema the validator cannot use: the server judges the call
            log.warning("MCP tool %s.%s has an unusable input schema", label, name)
            checked = {}
        if isinstance(checked, Refusal):
            return Decision("refused", checked.message, checked.guardrail)
        if fn.approval and not approved:
            return Decision("approval")
        return Decision("run")


def _bounded(result: client.CallResult) -> tuple[str | None, McpToolError | None]:
    """What the model (and the client's item) gets of a result: as much as a server tool's."""
    output, error = result.output, result.error
    if output is not None:
        output = _cut(output)
    if error is not None:
        error = error.model_copy(update={"message": _cut(error.message)})
    return output, error


def _cut(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f" … [cut: the tool answered {len(text)} characters]"


@dataclass
class SessionMcp:
    """A session's MCP work: listings (tasks beside the main loop), the calls' limits and
    approvals, and the audit hook."""

    audit: Audit | None = None
    clock: Clock = field(default_factory=SystemClock)
    guard: McpGuard = field(default_factory=McpGuard)
    approvals: McpApprovals = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Calls in flight (strong references: a shielded call outlives its response).
    _calls: set[asyncio.Task[client.CallResult]] = field(default_factory=set)
    _connections: dict[McpServer, client.McpConnection] = field(default_factory=dict)
    # Per server label: calls started in this session, and those running now.
    _started: Counter[str] = field(default_factory=Counter)
    _running: Counter[str] = field(default_factory=Counter)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.approvals = McpApprovals(self.record, self.clock)

    def list_tools(self, command: ListMcpTools, post: Post, spawn: Spawn) -> None:
        async def run() -> None:
            try:
                tools = await self.connection(command.server).list_tools()
            except client.McpFailure as exc:
                log.info("listing MCP server %s failed: %s", command.server.label, exc)
                message = exc.error.message
                await post(lambda c: mcp_flow.listing_failed(c, command.item_id, message))
                return
            await post(lambda c: mcp_flow.tools_listed(c, command.item_id, tools))

        task = spawn(run(), f"mcp-list-{command.server.label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection(self, server: McpServer) -> client.McpConnection:
        """The session's connection to ``server`` (opened when first used)."""
        held = self._connections.get(server)
        if held is None:
            held = self._connections[server] = client.McpConnection(server)
        return held

    def close(self) -> None:
        """Stop listings and approval timers; the connections close once no call runs on
        them (a write that started finishes even when the session ends)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self.approvals.close()
        self._close_idle()

    def _close_idle(self) -> None:
        if self._closed and not self._calls:
            for held in self._connections.values():
                held.close()
            self._connections.clear()

    def over_limit(self, server: McpServer, *, starting: bool) -> Decision | None:
        """The refusal of a call beyond the server's limits in this session (``starting``:
        it would run now, so the calls running count too)."""
        label = server.label
        most = server.max_calls_per_session
        if self._started[label] >= most:
            return Decision(
                "refused",
                f"MCP server '{label}' may be called at most {most} times in one session "
                "(max_calls_per_session); this call was not run. Tell the user this limit "
                "was reached.",
                "call_limit",
            )
        at_once = server.max_concurrent
        if starting and self._running[label] >= at_once:
            return Decision(
                "refused",
                f"MCP server '{label}' already runs {at_once} calls of this session "
                "(max_concurrent); this call was not run. Tell the user to try again once "
                "they have finished.",
                "concurrency_limit",
            )
        return None

    def start_call(
        self, fn: McpFunction, arguments: str, **detail: Any
    ) -> asyncio.Task[client.CallResult]:
        """Run one call in a task of its own, audited when it ends however it ends."""
        started = time.monotonic()
        server, name = fn.server, fn.tool.name
        work = self.connection(server).call_tool(name, json.loads(arguments or "{}"))
        task = asyncio.ensure_future(work)
        self._calls.add(task)
        self._started[server.label] += 1
        self._running[server.label] += 1

        def done(task: asyncio.Task[client.CallResult]) -> None:
            self._calls.discard(task)
            self._running[server.label] -= 1
            self._close_idle()
            latency_ms = round((time.monotonic() - started) * 1000)
            if task.cancelled():
                self.record(
                    server.label,
                    name,
                    arguments,
                    server.sensitive_args,
                    decision="cancelled",
                    status="cancelled",
                    reason="the response was interrupted",
                    latency_ms=latency_ms,
                    **detail,
                )
                return
            error = task.result().error
            self.record(
                server.label,
                name,
                arguments,
                server.sensitive_args,
                decision="ran",
                status=_status(error),
                error=error.type if error else None,
                latency_ms=latency_ms,
                **detail,
            )

        task.add_done_callback(done)
        return task

    def record(
        self, fn_label: str, name: str, arguments: str, sensitive: tuple[str, ...], **detail: Any
    ) -> None:
        if self.audit is None:
            return
        entry = {"server_label": fn_label, "tool": name, "arguments": redact(arguments, sensitive)}
        try:
            self.audit({"kind": "mcp", **entry, **detail})
        except Exception:  # the audit log must never break a call
            log.exception("auditing an MCP call failed")


def _status(error: McpToolError | None) -> str:
    """A call's end as the audit log says it (a time-out told apart, as for server tools)."""
    if error is None:
        return "completed"
    return "timeout" if error.code == client.TIMED_OUT else "failed"


@dataclass
class McpCallRunner:
    """The MCP calls of one response: judged, asked about, or run; each yields the item the
    model reads next. A call still running after ``FILLER_AFTER_S`` makes the response say
    a filler (once), so the line is not silent."""

    plan: ResponsePlan
    mcp: SessionMcp
    post: Post
    say: Say | None = None
    clock: Clock = field(default_factory=SystemClock)
    _filled: bool = False

    async def run_approved(self) -> list[McpCall | McpApprovalRequest]:
        """The calls the user approved since the last response, run before the model (the
        denied ones were recorded when the answer came: ``mcp_approvals.py``)."""
        return [await self._approved(call) for call in self.plan.approved if call.approve]

    async def _approved(self, call: ApprovedCall) -> McpCall:
        fn = next(
            (
                f
                for f in self.plan.mcp.values()
                if f.server.label == call.server_label and f.tool.name == call.name
            ),
            None,
        )
        item_id = new_id("item")
        rid = self.plan.response_id
        label, name, args, request_id = (
            call.server_label,
            call.name,
            call.arguments,
            call.request_id,
        )
        await self.post(lambda c: mcp_flow.open_call(c, rid, item_id, label, name, request_id))
        await self.post(lambda c: mcp_flow.call_arguments(c, rid, item_id, args))
        await self.post(lambda c: mcp_flow.call_arguments_done(c, rid, item_id))
        item = McpCall(
            id=item_id,
            server_label=label,
            name=name,
            arguments=args,
            approval_request_id=request_id,
        )
        if fn is None:
            message = f"MCP server '{label}' or its tool '{name}' is no longer available."
            gone = Decision("refused", message, "tool_not_allowed")
            return await self._refuse(item, gone, (), approval_request_id=request_id)
        decision = self.mcp.guard.decide(fn, args, approved=True)
        return await self._decided(fn, item, decision, approval_request=request_id)

    async def called(
        self, fn: McpFunction, item_id: str, arguments: str, *, opened: bool
    ) -> McpCall | McpApprovalRequest:
        """The model called ``fn`` (its ``mcp_call`` item streamed if ``opened``; a call
        that may need approval is held back until the guard has judged it)."""
        decision = self.mcp.guard.decide(fn, arguments)
        label, name = fn.server.label, fn.tool.name
        rid = self.plan.response_id
        if decision.verdict == "approval":
            # The user is never asked about a call the limits would refuse anyway.
            decision = self.mcp.over_limit(fn.server, starting=False) or decision
        if decision.verdict != "approval" and not opened:
            await self.post(lambda c: mcp_flow.open_call(c, rid, item_id, label, name))
            await self.post(lambda c: mcp_flow.call_arguments(c, rid, item_id, arguments))
            await self.post(lambda c: mcp_flow.call_arguments_done(c, rid, item_id))
        if decision.verdict == "approval":
            request = McpApprovalRequest(
                id=new_id("mcpr"), server_label=label, name=name, arguments=arguments
            )
            await self.post(lambda c: self._ask(c, fn, request))
            return request
        item = McpCall(id=item_id, server_label=label, name=name, arguments=arguments)
        return await self._decided(fn, item, decision)

    def _ask(
        self, conn: RealtimeConnection, fn: McpFunction, request: McpApprovalRequest
    ) -> list[Output]:
        """The request joins the response's output; its approval is held from then on."""
        rid = self.plan.response_id
        out = mcp_flow.approval_request(conn, rid, request)
        if out:  # not when the response was cancelled first
            self.mcp.approvals.asked(fn.server, request, rid, self.post)
        return out

    async def _decided(
        self,
        fn: McpFunction,
        item: McpCall,
        decision: Decision,
        approval_request: str | None = None,
    ) -> McpCall:
        if decision.verdict == "run":
            decision = self.mcp.over_limit(fn.server, starting=True) or decision
        if decision.verdict != "run":
            return await self._refuse(
                item, decision, fn.server.sensitive_args, approval_request_id=approval_request
            )
        rid, item_id = self.plan.response_id, item.id or ""
        await self.post(lambda c: mcp_flow.call_running(c, rid, item_id))
        work = self.mcp.start_call(
            fn,
            item.arguments,
            call_id=item_id,
            approved_by="mcp_approval_response" if approval_request else None,
            approval_request_id=approval_request,
        )
        try:
            if self.say is not None and not self._filled and not await self._within(work):
                self._filled = True
                await self.say(DEFAULT_FILLER + " ")  # the answer goes on after it
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            # A barge-in cancels a read tool; one that may change something, once started,
            # finishes (and is audited) even though its response was cut short.
            if fn.read_only:
                work.cancel()
            raise
        item.output, item.error = _bounded(result)
        await self.post(lambda c: mcp_flow.call_finished(c, rid, item_id, item.output, item.error))
        return item

    async def _within(self, task: asyncio.Task[client.CallResult]) -> bool:
        timer = asyncio.create_task(self.clock.sleep(FILLER_AFTER_S), name="mcp-filler-timer")
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return task.done()

    async def _refuse(
        self, item: McpCall, decision: Decision, sensitive: tuple[str, ...], **detail: Any
    ) -> McpCall:
        rid, item_id = self.plan.response_id, item.id or ""
        error = McpToolError(type="tool_execution_error", message=decision.message)
        item.error = error
        await self.post(lambda c: mcp_flow.call_finished(c, rid, item_id, None, error))
        self.mcp.record(
            item.server_label,
            item.name,
            item.arguments,
            sensitive,
            decision="refused",
            guardrail=decision.guardrail,
            message=decision.message,
            call_id=item_id,
            **detail,
        )
        return item
