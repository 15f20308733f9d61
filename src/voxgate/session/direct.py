"""Governance of a call whose media goes straight to an upstream Realtime service (direct
mode).

The client's browser talks to the upstream; voxgate holds a `Session` for the call all the
same (admitted, registered, counted, with its leases, ledger, budgets and duration limit),
one with no client of its own (the headless transport phone calls use), served by a
`DirectDriver`: voxgate's own sideband WebSocket on the upstream call. Every server event of
the call comes through it and goes out through the session as it is (so voxgate's metrics
and any sideband attached here see the call), with the usage it carries (`relay_records`, as
for a relayed session) handed to the session's observer first, like the embedded pipeline's.
Client events from a sideband attached here go to the upstream call. The upstream's events
count as activity for the idle timeout.

The sideband also does what the browser's own events bypass: the upstream's calls of server
tools run here (`relay_tools.UpstreamTools`, as for a relay: the output and a
``response.create`` go back on the sideband), and every configuration the upstream reports is
checked against the credential's policy and binding (`direct_policy`): a breach is reverted
with voxgate's own ``session.update``, and a call whose breach cannot be reverted is hung up.

However the session ends (a budget used up, the duration limit, a revoked key, a hang-up
sent here, shutdown), whoever serves the call then hangs the upstream call up
(`hang_up_unless_ended`); when the upstream call ends first, the session ends with it. A
call voxgate cannot watch is not left running ungoverned: if the sideband cannot be opened,
or is cut, the session ends (and so the call is hung up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from ..engines.upstream import Upstream
from ..engines.upstream.calls import CallFailed, hang_up, open_sideband
from ..protocol import events as ev
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from . import relay_records as records
from .direct_policy import adopt_model, breach, reverting
from .driver import DriverCommand, DriverHost, DriverOutput, Forward
from .relay_tools import UpstreamTools, with_server_tools
from .tool_flow import SessionTools
from .transport import PlayoutCut

log = logging.getLogger(__name__)
HANGUP_TIMEOUT_S = 10.0
# Client events (from sidebands attached here, and voxgate's own) waiting to go to the
# upstream call.
MAX_WAITING = 1024
POLICY_END = "policy_violation"
# action, code, detail: a decision for the audit log.
Audit = Callable[[str, str | None, dict[str, Any]], None]


class DirectDriver:
    """Serves a direct call's session from the upstream call's sideband."""

    def __init__(self, upstream: Upstream, safety_identifier: str | None) -> None:
        self.name = f"direct:{upstream.name}"
        self.upstream = upstream
        # Set by whoever serves the call before the session runs, once the upstream has
        # answered the offer.
        self.call_id: str | None = None
        self._safety_identifier = safety_identifier
        self.model = ""  # the admitted model, until the upstream's session names its own
        self.session: dict[str, Any] = {}  # the upstream's session object, as last reported
        self._host: DriverHost | None = None
        self._outgoing: asyncio.Queue[str] = asyncio.Queue(MAX_WAITING)
        self._watch: asyncio.Task[None] | None = None
        self._created: str | None = None  # the upstream's latest session.created, as sent
        self._responses: set[str] = set()
        # The upstream call is over already: nothing to hang up.
        self.upstream_ended = False
        self.server_tools: UpstreamTools | None = None
        self.audit: Audit = lambda action, code, detail: None
        # The call's configuration as last allowed, and the event id of voxgate's
        # session.update that puts it back after a breach (until the upstream reports again).
        self._allowed: dict[str, Any] | None = None
        # The configuration voxgate created the upstream call with.
        self.given: dict[str, Any] = {}
        self._revert: str | None = None
        self._reoffered = False

    def run_tools(self, tools: SessionTools) -> None:
        """The upstream's calls of server tools run here (`UpstreamTools`)."""
        self.server_tools = UpstreamTools(self, tools)

    def bind(self, host: DriverHost) -> None:
        self._host = host

    def start(self, conn: RealtimeConnection) -> Sequence[DriverOutput]:
        assert self._host is not None and self.call_id is not None, "bind and answer first"
        self.model = conn.config.model
        self._watch = self._host.spawn(self._sideband(self.call_id), "upstream-sideband")
        return []  # the session's events are the upstream's

    def session_created(self, conn: RealtimeConnection) -> ev.ServerEvent | Forward:
        if self._created is not None:
            return Forward(self._created, "session.created")
        return conn.session_created()

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> Sequence[DriverOutput]:
        """A client event from a sideband attached here: the upstream call's to handle, in
        order (those sent before voxgate's own sideband is open wait for it); approvals of
        server tools are answered here."""
        if self.server_tools is not None:
            return self.server_tools.receive(conn, raw)
        return self.forward(conn, raw)

    def forward(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        try:
            self._outgoing.put_nowait(
                raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            )
        except asyncio.QueueFull:
            error = ProtocolError(
                f"{MAX_WAITING} client events are already waiting for the upstream call; "
                "send fewer at once.",
                code="too_many_pending_events",
            )
            return [conn.error(error)]
        return []

    def send_upstream(self, conn: RealtimeConnection, event: dict[str, Any]) -> list[DriverOutput]:
        """A client event of voxgate's own, sent on its sideband."""
        return self.forward(conn, json.dumps(event))

    def track_audio(self, conn: RealtimeConnection, pcm24k: bytes) -> Sequence[DriverOutput]:
        return []  # the call's media goes to the upstream, not here

    def command(self, conn: RealtimeConnection, cmd: DriverCommand) -> Sequence[DriverOutput]:
        return []  # the local connection sees no client events, so it asks for nothing

    @property
    def busy(self) -> bool:
        return bool(self._responses)

    def say(self, conn: RealtimeConnection, text: str) -> list[DriverOutput]:
        return []  # the call's audio flows between the browser and the upstream: no filler

    def stop_responses(
        self, conn: RealtimeConnection, details: dict[str, Any]
    ) -> Sequence[DriverOutput]:
        # The upstream's responses end with the call, which is hung up when the session ends.
        return []

    def playout_cut(self, conn: RealtimeConnection, cut: PlayoutCut) -> Sequence[DriverOutput]:
        return []  # the upstream plays the call's audio

    def playout_stopped(self, conn: RealtimeConnection, response_id: str) -> Sequence[DriverOutput]:
        return []

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._host = None

    # -- the sideband ---------------------------------------------------------------------

    async def _sideband(self, call_id: str) -> None:
        try:
            ws = await open_sideband(self.upstream, call_id, self._safety_identifier)
        except CallFailed as exc:
            self._ended("upstream_unwatched", "upstream_sideband_failed", exc.message, 1011)
            return
        writer = asyncio.create_task(self._write(ws), name=f"{call_id}:upstream-writer")
        try:
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                await self._event(text)
        except ConnectionClosedError:
            # Cut, not closed by the upstream: the call may well go on, unwatched — end it.
            message = f"voxgate's sideband to call {call_id} was cut"
            self._ended("upstream_unwatched", "upstream_sideband_failed", message, 1011)
            return
        except Exception:  # a bug: the call must not go on unwatched (it is hung up)
            log.exception("watching upstream call %s failed", call_id)
            self._ended("upstream_unwatched", "upstream_sideband_failed", "internal error", 1011)
            return
        finally:
            writer.cancel()
            with contextlib.suppress(Exception):
                await ws.close()
        self.upstream_ended = True
        self._ended("upstream_closed", None, "", 1000)

    async def _event(self, text: str) -> None:
        host = self._host
        try:
            event = json.loads(text)
        except ValueError:
            return
        if host is None or not isinstance(event, dict):
            return
        host.touch()
        # The usage record goes first: the event that shows it waits until it is booked.
        await host.post(lambda conn: self._delivered(conn, text, event))

    def _delivered(
        self, conn: RealtimeConnection, text: str, event: dict[str, Any]
    ) -> list[DriverOutput]:
        host = self._host
        if host is None:
            return []
        kind = str(event.get("type") or "")
        rid = records.response_id_of(event)
        error = event.get("error") if kind == "error" else None
        if isinstance(error, dict) and self._revert and error.get("event_id") == self._revert:
            return self._unrevertable(conn, "revert_refused", _error_text(error))
        replaced = None
        if self.server_tools is not None:  # server-tool calls are run here, not shown
            replaced = self.server_tools.intercept(conn, event)
        outputs: list[DriverOutput] = [Forward(text, kind)]
        if replaced is not None:
            outputs = list(replaced)
        if kind in ("session.created", "session.updated") and isinstance(
            event.get("session"), dict
        ):
            self.session = event["session"]
            if kind == "session.created":
                self._created = text
            outputs += self._policed(conn, kind, self.session)
        elif kind == "response.created" and rid:
            self._responses.add(rid)
            host.response_started()  # the budgets are checked beside it
        elif kind == "response.done":
            self._responses.discard(rid or "")
            finished = records.response_finished(event, self._priced_model())
            outputs = [finished, *outputs] if finished is not None else outputs
        elif kind == "conversation.item.input_audio_transcription.completed":
            model = records.transcription_model(self.session) or "unknown"
            heard = records.transcription_done(event, model)
            outputs = [heard, *outputs] if heard is not None else outputs
        return outputs

    # -- the policy over the call's configuration ---------------------------------------------

    def _policed(
        self, conn: RealtimeConnection, kind: str, session: dict[str, Any]
    ) -> list[DriverOutput]:
        """A configuration the upstream reports: one that breaks the policy or the binding
        (the browser's session.update went straight upstream) is reverted to the last allowed
        one (at first, the one voxgate created the call with), and the call is hung up if
        that cannot be done."""
        if kind == "session.created":
            adopt_model(conn, session)
        own = self.server_tools.tools.broker.offered() if self.server_tools is not None else []
        refused = breach(conn, session, frozenset(t["name"] for t in own))
        if refused is None:
            self._allowed, self._revert = session, None
            return self._offered(conn, session)
        if self._revert is not None:  # the revert did not hold: the call cannot stay
            return self._unrevertable(conn, refused.code or "invalid_value", refused.message)
        self._revert = new_id("event")
        body = reverting(self._allowed or self.given, session)
        log.warning(
            "direct call %s: reverting a configuration its policy forbids (%s)",
            self.call_id,
            refused.code,
        )
        self.audit(
            "direct_session_update",
            refused.code,
            {"call_id": self.call_id, "param": refused.param, "outcome": "reverted"},
        )
        revert = {"type": "session.update", "event_id": self._revert, "session": body}
        return [conn.error(refused), *self.send_upstream(conn, revert)]

    def _offered(self, conn: RealtimeConnection, session: dict[str, Any]) -> list[DriverOutput]:
        """The server tools stay offered when the browser's session.update set its own tools
        (as a relay adds them to a client's update), once per loss of them."""
        if self.server_tools is None or session.get("tool_choice") == "none":
            return []
        tools = session.get("tools") if isinstance(session.get("tools"), list) else []
        assert isinstance(tools, list)
        names = {t.get("name") for t in tools if isinstance(t, dict)}
        broker = self.server_tools.tools.broker
        if all(t["name"] in names for t in broker.offered()):
            self._reoffered = False
            return []
        if self._reoffered:  # the upstream dropped them again: do not loop
            log.warning("direct call %s: the upstream does not keep the server tools", self.call_id)
            return []
        self._reoffered = True
        body = {"type": session.get("type", "realtime"), "tools": with_server_tools(tools, broker)}
        return self.send_upstream(conn, {"type": "session.update", "session": body})

    def _unrevertable(self, conn: RealtimeConnection, code: str, detail: str) -> list[DriverOutput]:
        self.audit(
            "direct_session_update",
            code,
            {"call_id": self.call_id, "outcome": "hung_up", "detail": detail},
        )
        message = (
            "The call's configuration was changed to one this credential's policy does not "
            f"allow, and it could not be put back ({detail}); the call was hung up."
        )
        self._ended(POLICY_END, code, message, 1008)
        return []

    async def _write(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await self._outgoing.get())

    def _priced_model(self) -> str:
        model = self.session.get("model")
        return model if isinstance(model, str) and model else self.model

    def _ended(self, reason: str, code: str | None, message: str, close_code: int) -> None:
        if self._host is not None:
            self._host.end(reason, code, message, close_code)


def _error_text(error: dict[str, Any]) -> str:
    return f"{error.get('code') or error.get('type')}: {error.get('message') or ''}".strip()


async def hang_up_unless_ended(driver: DirectDriver) -> None:
    """After the session: end the upstream call, unless it ended first."""
    if driver.upstream_ended or driver.call_id is None:
        return
    try:
        async with asyncio.timeout(HANGUP_TIMEOUT_S):
            await hang_up(driver.upstream, driver.call_id)
        log.info("hung up upstream call %s (%s)", driver.call_id, driver.upstream.name)
    except (CallFailed, TimeoutError) as exc:
        log.error("hanging up upstream call %s failed: %s", driver.call_id, exc)
