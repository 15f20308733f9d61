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
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from ..engines.upstream import Upstream
from ..engines.upstream.calls import CallFailed, hang_up, open_sideband
from ..protocol import events as ev
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from . import relay_records as records
from .driver import DriverCommand, DriverHost, DriverOutput, Forward
from .transport import PlayoutCut

log = logging.getLogger(__name__)
HANGUP_TIMEOUT_S = 10.0
# Client events (from sidebands attached here) waiting to go to the upstream call.
MAX_WAITING = 1024


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
        order (those sent before voxgate's own sideband is open wait for it)."""
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

    def track_audio(self, conn: RealtimeConnection, pcm24k: bytes) -> Sequence[DriverOutput]:
        return []  # the call's media goes to the upstream, not here

    def command(self, conn: RealtimeConnection, cmd: DriverCommand) -> Sequence[DriverOutput]:
        return []  # the local connection sees no client events, so it asks for nothing

    @property
    def busy(self) -> bool:
        return bool(self._responses)

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
        kind = str(event.get("type") or "")
        host.touch()
        rid = records.response_id_of(event)
        outputs: list[DriverOutput] = [Forward(text, kind)]
        if kind in ("session.created", "session.updated") and isinstance(
            event.get("session"), dict
        ):
            self.session = event["session"]
            if kind == "session.created":
                self._created = text
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
        # The usage record goes first: the event that shows it waits until it is booked.
        await host.post(lambda _: outputs)

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
