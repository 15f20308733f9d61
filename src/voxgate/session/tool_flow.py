"""Server tools inside a session: what the model is offered, and what happens around a call
(the broker in `tools.py` decides and runs it).

- Offered: a response's tools are the client's plus the server tools the caller may use
  (a server tool wins over a client tool of the same name).
- Called: the runner hands every call of a server tool here instead of to the client. The
  call and its ``function_call_output`` join the conversation as ``conversation.item.*``
  events (never as response output, which a client would try to execute); then, when the
  response had no client calls, a new response continues with the result — at most
  `MAX_ROUNDS` times in a row, so a model that keeps calling tools cannot loop forever.
- Slow: a tool still running after `FILLER_AFTER_S` makes the response say its filler.
- Barge-in: cancelling the response cancels a running ``read`` tool; a ``write`` or
  ``destructive`` one finishes, and its result still joins the conversation.
- Confirmation: the first call adds an ``mcp_approval_request`` item and the model reads the
  summary back. The action is settled by an ``mcp_approval_response`` (`approval`), by the
  user's next turn (`prepare`, before the response to that turn reads its context), by a
  barge-in into the read-back (`interrupted`), or by its expiry. Every settlement the
  client did not send itself joins the conversation as a server-made
  ``mcp_approval_response``, so interfaces and the model see how it ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from ..control.tools import PendingAction, is_clear_yes
from ..protocol.commands import ResponsePlan, StartResponse, ToolApproval
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from ..protocol.items import (
    FunctionCall,
    FunctionCallOutput,
    Item,
    McpApprovalRequest,
    McpApprovalResponse,
    UserMessage,
    item_text,
)
from ..protocol.tool_items import add_items
from .clock import Clock, SystemClock
from .driver import Post, Progress
from .tools import Outcome, Ready, ToolBroker

log = logging.getLogger(__name__)
FILLER_AFTER_S = 0.8
MAX_ROUNDS = 5
SERVER_LABEL = "voxgate"

Say = Callable[[str], Awaitable[None]]


@dataclass
class ServerCall:
    """A server tool call as the model streamed it."""

    call_id: str
    name: str
    arguments: str = ""


class SessionTools:
    def __init__(self, broker: ToolBroker) -> None:
        self.broker = broker
        self.clock: Clock = SystemClock()
        self._post: Post | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Task[Any]] = set()  # runs of tools that change things
        self._continued: set[str] = set()  # responses this flow created
        self._rounds = 0

    def bind(self, post: Post, clock: Clock) -> None:
        self._post, self.clock = post, clock
        self.broker.clock = clock

    async def post(self, progress: Progress) -> None:
        assert self._post is not None, "SessionTools used before Session bound it"
        await self._post(progress)

    # -- offering ---------------------------------------------------------------------------

    def intercepts(self, name: str) -> bool:
        return self.broker.handles(name)

    def offer(self, plan: ResponsePlan) -> ResponsePlan:
        if plan.response_id in self._continued:
            self._continued.discard(plan.response_id)
        else:
            self._rounds = 0  # a response the client (or a turn) asked for: a fresh chain
        if plan.tool_choice == "none":
            return plan
        mine = self.broker.offered()
        names = {t["name"] for t in mine}
        return replace(plan, tools=[t for t in plan.tools if t.get("name") not in names] + mine)

    # -- calls the model made ----------------------------------------------------------------

    async def run_calls(self, calls: list[ServerCall], say: Say) -> None:
        """Decide and run each call in turn (inside the response that made them)."""
        filler: Say | None = say
        for call in calls:
            decision = self.broker.check(call.name, call.call_id, call.arguments, new_id("mcpr"))
            if isinstance(decision, Ready):
                outcome = await self._execute(decision, filler, call)
                filler = None  # one filler per response is enough
            else:
                outcome = decision
            await self._show(call, outcome)

    def continuation(self, conn: RealtimeConnection) -> list[Output]:
        """A new response that speaks the tool results (skipped when another response is
        already running: it is the one that will)."""
        if self._rounds >= MAX_ROUNDS:
            log.warning(
                "session %s: %d tool rounds in a row; not continuing", conn.session_id, self._rounds
            )
            return []
        try:
            out = conn.create_response(None)
        except ProtocolError:
            return []
        self._rounds += 1
        for o in out:
            if isinstance(o, StartResponse):
                self._continued.add(o.plan.response_id)
                for action in self.broker.confirmations.all():
                    action.readback_response_id = action.readback_response_id or (
                        o.plan.response_id
                    )
        return out

    async def _execute(self, ready: Ready, say: Say | None, call: ServerCall) -> Outcome:
        task = self._spawn(self.broker.run(ready), f"tool-{ready.spec.name}")
        if ready.spec.effect != "read":
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        try:
            if say is not None and not await self.within(task, FILLER_AFTER_S):
                await say(ready.spec.filler_text)
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if ready.spec.effect == "read":
                task.cancel()
                self.broker.record_cancelled(ready, "the response was interrupted")
            else:  # it changes things: let it finish, and keep what it did
                self._spawn(self._keep(task, call), "tool-keep")
            raise

    async def _keep(self, task: asyncio.Task[Outcome], call: ServerCall) -> None:
        await self._show(call, await task)

    async def _show(self, call: ServerCall, outcome: Outcome) -> None:
        await self.post(lambda c: self._items(c, call, outcome))

    def _items(self, conn: RealtimeConnection, call: ServerCall, outcome: Outcome) -> list[Output]:
        made = self._result_items(call, outcome)
        if (action := outcome.action) is not None:
            made.append(
                McpApprovalRequest(
                    id=action.id,
                    type="mcp_approval_request",
                    name=action.tool,
                    arguments=action.arguments_json,
                    server_label=SERVER_LABEL,
                )
            )
            self._spawn(self._expire(action), "tool-expiry")
        return add_items(conn.conversation, made)

    # -- settling confirmations ------------------------------------------------------------

    def approval(self, cmd: ToolApproval) -> None:
        """An ``mcp_approval_response`` from the client or a sideband."""
        self._spawn(self._approve(cmd), "tool-approval")

    async def _approve(self, cmd: ToolApproval) -> None:
        action = self.broker.confirmations.get(cmd.approval_request_id)
        result = self.broker.settle(cmd.approval_request_id, cmd.approve, "event", cmd.reason)
        if action is None or result is None:
            return
        if isinstance(result, Ready):
            call = self._call_of(action)
            outcome = await self._execute(result, None, call)

            def show(c: RealtimeConnection) -> list[Output]:
                return [*self._items(c, call, outcome), *self.continuation(c)]

            await self.post(show)

    async def prepare(self, plan: ResponsePlan, say: Say) -> ResponsePlan:
        """Before a response reads its context: an open action that the user's next turn
        answers is settled by those words (a clear yes runs it; anything else cancels it),
        and the response sees the outcome."""
        added: list[Item] = []
        if plan.conversation != "auto":  # an out-of-band response is nobody's answer
            return plan
        for action in self.broker.confirmations.spoken():
            words = _next_user_words(plan.context, action.request_item_id)
            if words is None:
                continue
            if is_clear_yes(words):
                result = self.broker.settle(action.id, True, "spoken", words)
            else:
                result = self.broker.lapse(action, "not_confirmed", "spoken", words)
            if result is None:
                continue
            answer = _answer(action, isinstance(result, Ready), f"spoken: {words}")
            items: list[Item] = [answer]
            if isinstance(result, Ready):
                call = self._call_of(action)
                outcome = await self._execute(result, say, call)
                items += self._result_items(call, outcome)
            await self._add(items)
            added += items
        return replace(plan, context=[*plan.context, *added]) if added else plan

    def interrupted(self, conn: RealtimeConnection, response_id: str) -> list[Output]:
        """A response was cancelled: an action it was reading back is cancelled with it."""
        out: list[Output] = []
        for action in self.broker.confirmations.all():
            if action.readback_response_id == response_id:
                self.broker.lapse(action, "interrupted", "barge_in", None)
                out += add_items(conn.conversation, [_answer(action, False, "interrupted")])
        return out

    async def _expire(self, action: PendingAction) -> None:
        await self.clock.sleep(action.expires_at - self.clock.monotonic())

        def lapse(conn: RealtimeConnection) -> list[Output]:
            if self.broker.confirmations.get(action.id) is not action:
                return []  # settled meanwhile
            self.broker.lapse(action, "expired", "timer", None)
            return add_items(conn.conversation, [_answer(action, False, "expired")])

        await self.post(lapse)

    # -- helpers ---------------------------------------------------------------------------

    async def _add(self, items: list[Item]) -> None:
        await self.post(lambda c: add_items(c.conversation, items))

    def _call_of(self, action: PendingAction) -> ServerCall:
        """The approved run appears as a call of its own, with the frozen arguments."""
        return ServerCall(new_id("call"), action.tool, action.arguments_json)

    def _result_items(self, call: ServerCall, outcome: Outcome) -> list[Item]:
        return [
            FunctionCall(
                id=new_id("item"),
                type="function_call",
                status="completed",
                name=call.name,
                call_id=call.call_id,
                arguments=call.arguments,
            ),
            FunctionCallOutput(
                id=new_id("item"),
                type="function_call_output",
                status="completed",
                call_id=call.call_id,
                output=outcome.output,
            ),
        ]

    async def within(self, task: asyncio.Task[Any], seconds: float) -> bool:
        """Whether ``task`` finished within ``seconds`` of the session's clock."""
        timer = asyncio.create_task(self.clock.sleep(seconds), name="tool-filler-timer")
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return task.done()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task of this session's tool work (closed with it; see `close`)."""
        return self._spawn(work, name)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=f"{self.broker.session_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug in tool work costs that call, never the session; say where it was.
            log.error("%s failed", task.get_name(), exc_info=exc)

    def close(self) -> None:
        """The session ends: timers and reads stop; a write that started is left to finish
        (bounded by its timeout) so what it did is still recorded."""
        for task in list(self._tasks - self._writes):
            task.cancel()


def _next_user_words(context: list[Item], after_id: str) -> str | None:
    """The words of the first user message after the item ``after_id``, if there is one."""
    seen = False
    for item in context:
        if item.id == after_id:
            seen = True
        elif seen and isinstance(item, UserMessage):
            return item_text(item)
    return None


def _answer(action: PendingAction, approve: bool, reason: str) -> McpApprovalResponse:
    return McpApprovalResponse(
        id=new_id("item"),
        type="mcp_approval_response",
        approval_request_id=action.id,
        approve=approve,
        reason=reason,
    )
