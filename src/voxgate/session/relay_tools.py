"""Server tools in a session whose model runs upstream: the upstream's model calls them,
voxgate runs them.

`UpstreamTools` does it for any driver that talks to the upstream (`UpstreamLink`): the relay
(`ToolRelayDriver`) and a direct call's sideband (`direct.DirectDriver`, docs/relay.md says
what differs there: the browser sees the upstream's events itself). It
- offers the server tools upstream: they join the ``tools`` of the initial configuration, of
  every client ``session.update`` that sets tools and of every ``response.create`` that
  overrides them (so in a relayed session the session's ``tools`` shows them too);
- intercepts (through the relay's upstream-event hook) every call of a server tool: its
  ``response.output_item.*`` and ``response.function_call_arguments.*`` events are not
  relayed, so no client executes it (the ``conversation.item.*`` events of the call still
  are, for interfaces). When the response is done, the broker decides and runs each call,
  voxgate sends the ``function_call_output`` upstream and, when the response had no client
  calls, a ``response.create`` — the upstream's answer is relayed as usual;
- keeps confirmations here: a pending action is shown to the client as a server-made
  ``mcp_approval_request`` item (the upstream never sees it); the client's
  ``mcp_approval_response`` for it is answered here, not forwarded. An approved action runs
  once and its call and output are added upstream, then a response speaks the result; a
  read-back response that ends cancelled upstream (barge-in) cancels its action.
- hears the user's next turn as the upstream reports it (a typed message, or a spoken
  turn's transcript): a clear yes cancels the upstream's own answer to it, runs the action
  and asks for voxgate's answer (marked by its metadata); anything else cancels the action.
A relayed ``response.done`` lists only the client's calls (``client_text``).
A server tool still running after `FILLER_AFTER_S` makes voxgate say its filler itself, with
the embedded engines (`RelayDriver.say`, spoken as the disclosure is; a direct call cannot).

`ToolRelayDriver` is a `RelayDriver` whose client events and upstream events pass through
its `UpstreamTools` (the initial configuration offers the server tools).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..control.tools import PendingAction, is_clear_yes
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from .driver import DriverOutput, Forward, Progress
from .relay import RelayDriver
from .tool_flow import FILLER_AFTER_S, SERVER_LABEL, ServerCall, SessionTools
from .tools import Outcome, Ready, ToolBroker

log = logging.getLogger(__name__)
OWN_ANSWER = "tool_result"
_REWRITTEN = ('"session.update"', '"response.create"', '"mcp_approval_response"')
_HIDDEN = {
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
}


class UpstreamLink(Protocol):
    """What `UpstreamTools` needs of the driver that talks to the upstream."""

    @property
    def busy(self) -> bool:
        """A response is running upstream (or was asked for): another would be refused."""
        ...

    def send_upstream(self, conn: RealtimeConnection, event: dict[str, Any]) -> list[DriverOutput]:
        """Send a client event of voxgate's own upstream."""
        ...

    def forward(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        """A client event (from a client or sideband of voxgate's) on its usual way upstream."""
        ...

    def say(self, conn: RealtimeConnection, text: str) -> list[DriverOutput]:
        """Speak ``text`` to the user now, if the link can (a slow tool's filler)."""
        ...


def with_server_tools(tools: list[Any], broker: ToolBroker) -> list[Any]:
    """``tools`` with the server tools the caller may use (a server tool wins over a client
    tool of the same name)."""
    mine = broker.offered()
    names = {t["name"] for t in mine}
    return [t for t in tools if not (isinstance(t, dict) and t.get("name") in names)] + mine


class ToolRelayDriver(RelayDriver):
    """A relay whose upstream's calls of server tools run here (`UpstreamTools`)."""

    def __init__(self, *args: Any, tools: SessionTools, **kwargs: Any) -> None:
        initial = dict(kwargs.pop("initial", None) or {"type": "realtime"})
        if kwargs.pop("hook", None) is not None:
            raise ValueError("a ToolRelayDriver's upstream hook is its own")
        initial["tools"] = with_server_tools(initial.get("tools") or [], tools.broker)
        super().__init__(*args, initial=initial, hook=_intercept, **kwargs)
        self.server_tools = UpstreamTools(self, tools)

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        return self.server_tools.receive(conn, raw)

    def forward(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        return super().receive(conn, raw)

    def client_text(self, text: str, data: dict[str, Any]) -> str:
        return self.server_tools.client_text(text, data)


class UpstreamTools:
    """Server tools of a session whose model runs upstream, seen through ``link``: a relay
    (`ToolRelayDriver`) or a direct call's sideband (`direct.DirectDriver`)."""

    def __init__(self, link: UpstreamLink, tools: SessionTools) -> None:
        self.link = link
        self.tools = tools
        self._tool_items: dict[str, ServerCall] = {}  # item id → the server call it holds
        self._tool_calls: dict[str, list[ServerCall]] = {}  # response id → its server calls
        self._tool_client_calls: set[str] = set()  # responses that also called client tools
        self._tool_requests: dict[str, PendingAction] = {}  # approval requests shown
        self._tool_answered: set[str] = set()
        # Actions whose read-back response has not started upstream yet.
        self._tool_unread: list[PendingAction] = []
        # Spoken approvals being carried out: the upstream's own answer to that turn is
        # cancelled (voxgate answers once the action ran). The response running upstream.
        self._tool_settling = 0
        self._tool_current: str | None = None
        # voxgate's own response.create, held while the upstream is busy with another.
        self._tool_deferred: dict[str, Any] | None = None
        # Event ids of voxgate's own cancels: the upstream's error if one came too late
        # (the response had just ended) is voxgate's business, not the client's.
        self._tool_own_events: set[str] = set()
        # User items that joined while actions were open: item id → those actions.
        self._tool_turns: dict[str, set[str]] = {}

    # -- client → upstream ------------------------------------------------------------------

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        # Audio appends (most frames, up to megabytes) pass untouched, parsed once by the relay.
        if not isinstance(raw, str) or not any(k in raw for k in _REWRITTEN):
            return self.link.forward(conn, raw)
        try:
            event = json.loads(raw)
        except ValueError:
            return self.link.forward(conn, raw)
        if not isinstance(event, dict):
            return self.link.forward(conn, raw)
        kind, item = event.get("type"), event.get("item")
        approval = isinstance(item, dict) and item.get("type") == "mcp_approval_response"
        if kind == "conversation.item.create" and approval:
            assert isinstance(item, dict)
            return self._tool_approval(conn, event, item)
        body = event.get("session") if kind == "session.update" else event.get("response")
        sets_tools = isinstance(body, dict) and isinstance(body.get("tools"), list)
        if kind in ("session.update", "response.create") and sets_tools:
            assert isinstance(body, dict)
            if body.get("tool_choice") != "none":
                body["tools"] = with_server_tools(body["tools"], self.tools.broker)
                raw = json.dumps(event)
        return self.link.forward(conn, raw)

    # -- upstream → client: the hook ---------------------------------------------------------

    def intercept(
        self, conn: RealtimeConnection, data: dict[str, Any]
    ) -> list[DriverOutput] | None:
        kind = data.get("type")
        if kind in _HIDDEN:
            return self._tool_call_event(data)
        error = data.get("error") if kind == "error" else None
        if isinstance(error, dict) and error.get("event_id") in self._tool_own_events:
            self._tool_own_events.discard(error["event_id"])
            return []
        if kind == "response.created" and isinstance(data.get("response"), dict):
            self._tool_current = str(data["response"].get("id"))
            for action in self._tool_unread:  # this response reads the summary back
                action.readback_response_id = self._tool_current
            self._tool_unread.clear()
            metadata = data["response"].get("metadata") or {}
            if metadata.get("voxgate") == OWN_ANSWER:
                self._tool_settling = max(0, self._tool_settling - 1)
            elif self._tool_settling:
                self._tool_cancel(self._tool_current)
        self._tool_user_turn(data)
        if kind == "response.done" and isinstance(data.get("response"), dict):
            response = data["response"]
            rid = str(response.get("id"))
            if rid == self._tool_current:
                self._tool_current = None
            if self._tool_deferred is not None:
                self.tools.spawn(self.tools.post(self._tool_flush), "relay-answer")
            if response.get("status") == "cancelled":
                self.tools.spawn(self.tools.post(self._tool_interrupted(rid)), "relay-barge-in")
            calls = self._tool_calls.pop(rid, [])
            more = rid not in self._tool_client_calls
            self._tool_client_calls.discard(rid)
            if calls and response.get("status") == "completed":
                self.tools.spawn(self._run_tools(calls, more), "relay-tools")
        return None

    def client_text(self, text: str, data: dict[str, Any]) -> str:
        """A ``response.done`` lists the server calls it made: the client sees it without
        them, as it saw none of their output-item events, so no client executes one."""
        response = data.get("response") if data.get("type") == "response.done" else None
        if not isinstance(response, dict) or not isinstance(response.get("output"), list):
            return text
        output = [item for item in response["output"] if not self._server_call(item)]
        if len(output) == len(response["output"]):
            return text
        return json.dumps({**data, "response": {**response, "output": output}})

    def _server_call(self, item: Any) -> bool:
        return (
            isinstance(item, dict)
            and item.get("type") == "function_call"
            and self.tools.intercepts(str(item.get("name")))
        )

    def _tool_call_event(self, data: dict[str, Any]) -> list[DriverOutput] | None:
        item = data.get("item") if isinstance(data.get("item"), dict) else None
        item_id = str((item or {}).get("id") or data.get("item_id") or "")
        if item is not None and item.get("type") == "function_call":
            if not self.tools.intercepts(str(item.get("name"))):
                self._tool_client_calls.add(str(data.get("response_id")))
                return None
            self._tool_items.setdefault(item_id, ServerCall(str(item.get("call_id")), item["name"]))
        call = self._tool_items.get(item_id)
        if call is None:
            return None
        if data.get("type") == "response.function_call_arguments.done":
            call.arguments = str(data.get("arguments") or "")
            call.call_id = str(data.get("call_id") or call.call_id)
            self._tool_calls.setdefault(str(data.get("response_id")), []).append(call)
        if data.get("type") == "response.output_item.done":
            self._tool_items.pop(item_id, None)  # its last event
        return []  # a server call: the client must not execute it

    # -- running ---------------------------------------------------------------------------

    async def _run_tools(self, calls: list[ServerCall], more: bool) -> None:
        broker = self.tools.broker
        filler = True  # one per response is enough
        for call in calls:
            decision = broker.check(call.name, call.call_id, call.arguments, new_id("mcpr"))
            if not isinstance(decision, Ready):
                outcome: Outcome = decision
            else:
                task = self.tools.spawn(broker.run(decision), f"relay-tool-{call.name}")
                if filler and not await self.tools.within(task, FILLER_AFTER_S):
                    filler = False
                    await self.tools.post(self._filler(decision.spec.filler_text))
                outcome = await task
            await self.tools.post(self._delivered(call, outcome))
        if more:
            await self.tools.post(lambda c: self._tool_answer(c, {"type": "response.create"}))

    def _filler(self, text: str) -> Progress:
        return lambda conn: self.link.say(conn, text)

    def _delivered(self, call: ServerCall, outcome: Outcome) -> Progress:
        return lambda conn: self._tool_output(conn, call, outcome, False)

    def _tool_output(
        self, conn: RealtimeConnection, call: ServerCall, outcome: Outcome, as_new_call: bool
    ) -> list[DriverOutput]:
        """The call's output upstream (after the call itself, when voxgate made the call);
        an approval request to the client."""
        out: list[DriverOutput] = []
        if as_new_call:
            item = {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
            out += self.link.send_upstream(conn, {"type": "conversation.item.create", "item": item})
        output = {"type": "function_call_output", "call_id": call.call_id, "output": outcome.output}
        out += self.link.send_upstream(conn, {"type": "conversation.item.create", "item": output})
        if (action := outcome.action) is not None:
            self._tool_requests[action.id] = action
            self._tool_unread.append(action)
            request = {
                "id": action.id,
                "type": "mcp_approval_request",
                "name": action.tool,
                "arguments": action.arguments_json,
                "server_label": SERVER_LABEL,
            }
            out += _shown(request)
            self.tools.spawn(self._tool_expire(action), "relay-tool-expiry")
        return out

    def _tool_approval(
        self, conn: RealtimeConnection, event: dict[str, Any], item: dict[str, Any]
    ) -> list[DriverOutput]:
        request_id = str(item.get("approval_request_id"))
        if request_id not in self._tool_requests:
            return self.link.forward(conn, json.dumps(event))  # not ours: the upstream's
        if request_id in self._tool_answered:
            error = ProtocolError(
                f"The approval request '{request_id}' was answered already; an approval is "
                "given once.",
                code="approval_already_answered",
                param="item.approval_request_id",
            )
            return [conn.error(error, event.get("event_id"))]
        self._tool_answered.add(request_id)
        approve = item.get("approve") is True
        answer = {
            "id": item.get("id") or new_id("item"),
            "type": "mcp_approval_response",
            "approval_request_id": request_id,
            "approve": approve,
        }
        reason = item.get("reason") if isinstance(item.get("reason"), str) else None
        self.tools.spawn(self._tool_settle(request_id, approve, "event", reason), "relay-approval")
        return _shown(answer)

    def _tool_user_turn(self, data: dict[str, Any]) -> None:
        """A user item joins upstream: the actions open now are the ones it answers, once
        its words are known (a typed message at once, a spoken turn with its transcript —
        which may come late, so a turn from before the request never answers it)."""
        item = data.get("item") if isinstance(data.get("item"), dict) else None
        user = item is not None and (item.get("type"), item.get("role")) == ("message", "user")
        if user and data.get("type") == "conversation.item.added":
            open_now = {a.id for a in self.tools.broker.confirmations.spoken()}
            if open_now:
                self._tool_turns[str(item.get("id") if item else "")] = open_now
        item_id = str(item.get("id") if item is not None else data.get("item_id"))
        words = _user_words(data)
        if words is not None and item_id in self._tool_turns:
            self._tool_heard(words, self._tool_turns.pop(item_id))

    def _tool_heard(self, words: str, answers: set[str]) -> None:
        """The user's turn settles the open actions it answers (and a spoken answer may
        settle): a clear yes runs them, anything else cancels them."""
        for action in self.tools.broker.confirmations.spoken():
            if action.id not in answers or action.id not in self._tool_requests:
                continue
            if action.id in self._tool_answered:
                continue
            self._tool_answered.add(action.id)
            yes = is_clear_yes(words)
            if yes:
                self._tool_settling += 1
                if self._tool_current is not None:
                    self._tool_cancel(self._tool_current)
            answer = {
                "id": new_id("item"),
                "type": "mcp_approval_response",
                "approval_request_id": action.id,
                "approve": yes,
                "reason": f"spoken: {words}",
            }
            self.tools.spawn(self.tools.post(_show(answer)), "relay-heard")
            self.tools.spawn(self._tool_settle(action.id, yes, "spoken", words), "relay-spoken")

    def _tool_answer(self, conn: RealtimeConnection, create: dict[str, Any]) -> list[DriverOutput]:
        """Ask the upstream for voxgate's response now, or once its current one is done
        (two at once would be refused)."""
        if self.link.busy:
            self._tool_deferred = create
            return []
        return self.link.send_upstream(conn, create)

    def _tool_flush(self, conn: RealtimeConnection) -> list[DriverOutput]:
        if self._tool_deferred is None or self.link.busy:
            return []
        create, self._tool_deferred = self._tool_deferred, None
        return self.link.send_upstream(conn, create)

    def _tool_cancel(self, response_id: str) -> None:
        event_id = new_id("event")
        self._tool_own_events.add(event_id)
        cancel = {"type": "response.cancel", "response_id": response_id, "event_id": event_id}
        self.tools.spawn(
            self.tools.post(lambda c: self.link.send_upstream(c, cancel)), "relay-cancel"
        )

    async def _tool_settle(
        self, request_id: str, approve: bool, channel: str, words: str | None
    ) -> None:
        broker = self.tools.broker
        action = self._tool_requests[request_id]
        spoken_yes = channel == "spoken" and approve
        if channel == "spoken" and not approve:
            result: Ready | Outcome | None = broker.lapse(action, "not_confirmed", channel, words)
        else:
            result = broker.settle(request_id, approve, channel, words)
        if isinstance(result, Ready):
            call = ServerCall(new_id("call"), action.tool, action.arguments_json)
            outcome = await broker.run(result)
            # After a spoken yes, the answer is marked as voxgate's: answers the upstream
            # starts before it are cancelled (see `intercept`), this one is not.
            create: dict[str, Any] = {"type": "response.create"}
            if spoken_yes:
                create["response"] = {"metadata": {"voxgate": OWN_ANSWER}}

            def show(c: RealtimeConnection) -> list[DriverOutput]:
                out = self._tool_output(c, call, outcome, True)
                return out + self._tool_answer(c, create)

            await self.tools.post(show)
            return
        if spoken_yes:
            self._tool_settling -= 1
        if result is not None:
            await self.tools.post(lambda c: self._tool_note(c, action, result.output))

    async def _tool_expire(self, action: PendingAction) -> None:
        clock = self.tools.clock
        await clock.sleep(action.expires_at - clock.monotonic())

        def lapse(conn: RealtimeConnection) -> Sequence[DriverOutput]:
            if (
                action.id in self._tool_answered
                or self.tools.broker.confirmations.get(action.id) is None
            ):
                return []
            self._tool_answered.add(action.id)
            outcome = self.tools.broker.lapse(action, "expired", "timer")
            answer = {
                "id": new_id("item"),
                "type": "mcp_approval_response",
                "approval_request_id": action.id,
                "approve": False,
                "reason": "expired",
            }
            return [*_shown(answer), *self._tool_note(conn, action, outcome.output)]

        await self.tools.post(lapse)

    def _tool_interrupted(self, response_id: str) -> Progress:
        """A barge-in into (or a cancel of) a read-back cancels the action it read back."""

        def lapse(conn: RealtimeConnection) -> Sequence[DriverOutput]:
            out: list[DriverOutput] = []
            for action in self.tools.broker.confirmations.all():
                if action.readback_response_id != response_id:
                    continue
                self._tool_answered.add(action.id)
                outcome = self.tools.broker.lapse(action, "interrupted", "barge_in")
                answer = {
                    "id": new_id("item"),
                    "type": "mcp_approval_response",
                    "approval_request_id": action.id,
                    "approve": False,
                    "reason": "interrupted",
                }
                out += [*_shown(answer), *self._tool_note(conn, action, outcome.output)]
            return out

        return lapse

    def _tool_note(
        self, conn: RealtimeConnection, action: PendingAction, text: str
    ) -> list[DriverOutput]:
        """Tell the upstream's model that the action did not happen."""
        note = {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": f"{action.tool}: {text}"}],
        }
        return self.link.send_upstream(conn, {"type": "conversation.item.create", "item": note})


def _intercept(
    driver: RelayDriver, conn: RealtimeConnection, data: dict[str, Any]
) -> Sequence[DriverOutput] | None:
    assert isinstance(driver, ToolRelayDriver)
    return driver.server_tools.intercept(conn, data)


def _show(item: dict[str, Any]) -> Progress:
    return lambda conn: _shown(item)


def _user_words(data: dict[str, Any]) -> str | None:
    """The words of a user turn an upstream event reports: a transcript, or a typed message."""
    if data.get("type") == "conversation.item.input_audio_transcription.completed":
        return str(data.get("transcript") or "")
    item = data.get("item")
    if data.get("type") != "conversation.item.added" or not isinstance(item, dict):
        return None
    if item.get("type") != "message" or item.get("role") != "user":
        return None
    texts = [p.get("text") for p in item.get("content") or [] if isinstance(p, dict)]
    words = " ".join(t for t in texts if isinstance(t, str))
    return words or None


def _shown(item: dict[str, Any]) -> list[DriverOutput]:
    """A voxgate-made item as the client sees it join the conversation."""
    out: list[DriverOutput] = []
    for kind in ("conversation.item.added", "conversation.item.done"):
        event = {"type": kind, "event_id": new_id("event"), "previous_item_id": None, "item": item}
        out.append(Forward(json.dumps(event), kind))
    return out
