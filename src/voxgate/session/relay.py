"""A session served by an upstream Realtime service, event for event (`RelayDriver`).

- Upstream → client: every server event goes out as the upstream wrote it (ids unchanged),
  except ``session.created``, which is the upstream's with the session's initial
  configuration (a client secret's binding, the policy's voice) applied first: that is sent
  as a ``session.update`` right after connecting, and ``session.created`` carries the
  ``session`` of its ``session.updated``. ``rate_limits.updated`` is merged with voxgate's
  budgets (`RateLimitBook`). Where the server plays the audio itself (WebRTC), audio deltas
  become the playout's audio instead of events.
- Client → upstream: each event is checked first, as the embedded pipeline checks it:
  decoding and limits, the policy and the client secret's binding on ``session.update``
  (validated against a mirror of the configuration in the session's connection) and on
  ``response.create``'s overrides. A refused event gets an ``error`` and is not forwarded.
- The books: ``response.done`` and a transcription's ``completed`` become the same
  `ResponseFinished` / `UserInput` records the pipeline emits (the event waits until they
  are recorded); ``response.created`` lets the budgets veto a response.
- What the session says itself (the disclosure) is said here with the embedded engines,
  before anything of the upstream's, and the upstream is then told (`LocalSpeech`).
- Failure: an upstream that cannot be reached, refuses, closes or stalls (no event for
  ``stall_timeout_s`` on the session's clock while a response is expected, or no session
  opened within it) is an `UpstreamLost` signal with the
  `UpstreamError` (``retryable``) and the responses it cut off (each already ended with a
  ``response.done`` of status ``failed``). ``on_lost`` decides what follows (failover); by
  default the session ends with an ``upstream_unavailable`` error.
- ``hook`` sees every upstream event before it is relayed and may replace it (server-side
  tools intercept ``function_call`` items there), using `send_upstream`.
- Carry-over (failover and renewal, `handover.py`): a ``mirror`` keeps the conversation as
  the upstream's events describe it, and the user's audio as written upstream; ``replay``
  events give a new upstream session an earlier one's conversation right after the initial
  configuration, before any client event (the upstream's answers to items with an id are
  waited for, not relayed); ``announce`` says what the client hears of a new upstream
  session (``session.created`` for the first, a ``session.updated`` naming what serves now
  after a failover, nothing after a renewal); `prepare` opens the upstream session before the
  driver takes over; ``after_event`` hears of each relayed event (renewal looks for a quiet
  moment there).

Tasks (in the session's group): one reads the upstream (and connects first), one writes to
it. Client events that arrive before the upstream session is open wait, in order, in a
queue bounded by `MAX_PENDING_BYTES` (past it the upstream counts as stalled).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

from ..audio import AudioFormat, OutputConverter
from ..engines.upstream import (
    Upstream,
    UpstreamConnection,
    UpstreamError,
    UpstreamProtocol,
    UpstreamStalled,
)
from ..protocol import events as ev
from ..protocol.carry import ConversationMirror
from ..protocol.commands import CancelResponse, ClearOutputAudio, StartResponse
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from ..protocol.user_audio import Written, written_by
from . import relay_records as records
from .clock import Clock, within
from .disclosure import filler_request, said_here
from .driver import PLAYOUT_RATE, DriverCommand, DriverHost, DriverOutput, Forward, Progress
from .relay_checks import check, described
from .relay_playout import AudioDropped, RelayPlayout
from .relay_replay import replay
from .relay_speech import LocalSpeech
from .relay_types import AfterEvent, Announce, LostHandler, UpstreamHook, UpstreamLost
from .transport import PlayoutCut

log = logging.getLogger(__name__)
# Client events waiting for the upstream (not yet open, or not reading), in characters.
MAX_PENDING_BYTES = 16 * 1024 * 1024
LOST_CODE = "upstream_unavailable"


_Opened = tuple[UpstreamConnection, dict[str, Any], list[tuple[str, Any]]]


class _Refused(UpstreamError):
    """The upstream opened the session but refused its configuration (or spoke nonsense)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RelayDriver:
    def __init__(
        self,
        upstream: Upstream,
        protocol: UpstreamProtocol,
        *,
        model: str,
        safety_identifier: str | None = None,
        initial: dict[str, Any] | None = None,
        on_lost: LostHandler | None = None,
        hook: UpstreamHook | None = None,
        mirror: ConversationMirror | None = None,
        replay: Sequence[dict[str, Any]] = (),
        announce: Announce = "created",
        after_event: AfterEvent | None = None,
        audio_dropped: AudioDropped | None = None,
    ) -> None:
        self.upstream = upstream
        self.protocol = protocol
        self.name = f"relay:{upstream.name}"
        self.model = model
        self.safety_identifier = safety_identifier
        self.initial = initial
        self.on_lost = on_lost
        self.hook = hook
        self.mirror = mirror
        self.replay = list(replay)
        self.announce: Announce = announce
        self.after_event = after_event
        self._prepared: _Opened | None = None
        # Client events other than audio appends sent upstream, and how many of them had
        # gone out when the upstream last spoke: a renewal waits until the upstream has
        # answered the last one, and is dropped if one goes out while it is prepared.
        self.changes_sent = 0
        self.changes_heard = 0
        # The upstream's session object as last reported, and its id.
        self.session: dict[str, Any] | None = None
        self.upstream_session_id: str | None = None
        self._host: DriverHost | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Client events to write, each with its effect on the user's input (user_audio.py).
        self._outgoing: deque[tuple[str, Written]] = deque()
        self._pending_chars = 0
        self._wake = asyncio.Event()
        # Responses in progress upstream (the response object of their response.created),
        # and response.create events sent that the upstream has not answered yet.
        self._active: dict[str, dict[str, Any]] = {}
        # Responses voxgate ended itself (budget, close): what the upstream still says about
        # them is dropped, so the client sees one response.done each.
        self._ended_here: set[str] = set()
        self._requested = 0
        # When no upstream event by then is a stall (the session's clock; None: none is
        # expected), and what wakes the watch when one becomes expected.
        self._stall_at: float | None = None
        self._expecting = asyncio.Event()
        self._done = False  # closed or lost: nothing more goes upstream
        self._to_upstream: OutputConverter | None = None
        # Where voxgate plays the audio (WebRTC): the playout's side of the protocol.
        self.playout = RelayPlayout(upstream.name, audio_dropped)
        # What the session says itself (the disclosure), with the embedded engines.
        self.speech = LocalSpeech(self.send_upstream, self._event)

    # -- Driver ---------------------------------------------------------------------------

    def bind(self, host: DriverHost) -> None:
        self._host = host
        self._tasks.append(host.spawn(self._run(host), f"upstream:{self.upstream.name}"))

    def start(self, conn: RealtimeConnection) -> list[DriverOutput]:
        return []  # session.created comes from the upstream

    def session_created(self, conn: RealtimeConnection) -> ev.ServerEvent | Forward:
        if self.session is None:
            return conn.session_created()
        created = {"type": "session.created", "event_id": new_id("event"), "session": self.session}
        return Forward(json.dumps(created), "session.created")

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> list[DriverOutput]:
        event, client_event_id, error = ev.parse_client_event(raw)
        if event is None:
            assert error is not None
            return [conn.error(error, client_event_id)]
        if isinstance(event, ev.OutputAudioBufferClear) and conn.server_playout:
            return [ClearOutputAudio(event.response_id)]  # voxgate's playout, not upstream's
        try:
            check(conn, event, len(raw))
        except ProtocolError as exc:
            return [conn.error(exc, event.event_id)]
        if isinstance(event, ev.ResponseCreate):
            self._requested += 1
            self._arm()
        if not isinstance(event, ev.InputAudioBufferAppend):
            self.changes_sent += 1
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
        return self._send(conn, text, written_by(event, conn.input_format) if self.mirror else None)

    def track_audio(self, conn: RealtimeConnection, pcm24k: bytes) -> list[DriverOutput]:
        fmt = conn.input_format
        if self._to_upstream is None or self._to_upstream.format.type != fmt:
            self._to_upstream = OutputConverter(PLAYOUT_RATE, AudioFormat.from_type(fmt))
        pcm = self._to_upstream.process(pcm24k)
        event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        return self._send(conn, json.dumps(event), (pcm, fmt))

    def command(self, conn: RealtimeConnection, cmd: DriverCommand) -> list[DriverOutput]:
        if isinstance(cmd, CancelResponse) and cmd.response_id in self._active:
            return self.send_upstream(
                conn, {"type": "response.cancel", "response_id": cmd.response_id}
            )
        if isinstance(cmd, StartResponse) and said_here(cmd.plan) and self._host is not None:
            return self.speech.start(conn, self._host, cmd.plan)
        # Otherwise the mirror connection starts no responses and hears no audio itself.
        return []

    @property
    def busy(self) -> bool:
        return self._expected or self.speech.busy

    def say(self, conn: RealtimeConnection, text: str) -> list[DriverOutput]:
        """Speak ``text`` verbatim now with the embedded engines (a server tool's filler),
        unless the session is answering already or cannot speak here."""
        if self._host is None or self._host.engines is None or conn.active_response_id:
            return []
        try:
            return [*conn.create_response(filler_request(text))]
        except ProtocolError as exc:
            log.info("session %s: no filler (%s)", conn.session_id, exc)
            return []

    @property
    def _expected(self) -> bool:
        """An upstream response is running or asked for: the upstream owes events."""
        return bool(self._active) or self._requested > 0

    def stop_responses(
        self, conn: RealtimeConnection, details: dict[str, Any]
    ) -> list[DriverOutput]:
        out: list[DriverOutput] = self.speech.stop(conn, details)
        for rid in list(self._active):
            if not self._done:
                self.send_upstream(conn, {"type": "response.cancel", "response_id": rid})
            out += [self._ended(rid, "cancelled", details), *self.playout.ended(conn, rid)]
            out.append(CancelResponse(rid))
        self._requested = 0
        return out

    def close(self) -> None:
        self._done = True
        for task in self._tasks:
            task.cancel()
        self._host = None  # it holds methods of the session: no reference cycle

    # -- carry-over (handover.py) ---------------------------------------------------------------

    @property
    def host(self) -> DriverHost | None:
        return self._host

    async def prepare(self, clock: Clock) -> None:
        """Open the upstream session (configuration and replay included) before the driver
        is bound, timed on the session's ``clock``; raises UpstreamError. `discard` it if it
        is not switched to after all."""
        link = await self.protocol.connect(
            self.upstream, self.model, safety_identifier=self.safety_identifier
        )
        try:
            created, early = await self._handshake(link, clock)
        except BaseException:
            await link.close()
            raise
        self._prepared = (link, created, early)

    async def discard(self) -> None:
        """Close a prepared upstream session that will not be used."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            await prepared[0].close()

    def spawn(self, work: Awaitable[None], name: str) -> None:
        """A task of this driver's: it ends when the driver is closed."""
        if self._host is not None:
            self._tasks.append(self._host.spawn(work, f"{self.name}:{name}"))

    def take_unsent(self) -> list[str]:
        """Client events not yet written upstream (they go to whatever serves next)."""
        unsent = [text for text, _ in self._outgoing]
        self._outgoing.clear()
        self._pending_chars = 0
        return unsent

    # -- for hooks (server-side tools) ------------------------------------------------------

    def client_text(self, text: str, data: dict[str, Any]) -> str:
        """The upstream event as the client receives it (``data`` itself is what voxgate
        books and mirrors); a subclass may hide parts that are voxgate's own business."""
        return text

    def send_upstream(self, conn: RealtimeConnection, event: dict[str, Any]) -> list[DriverOutput]:
        """Send a client event of voxgate's own upstream (after what the client sent)."""
        if event.get("type") == "response.create":
            self._requested += 1
            self._arm()
        if event.get("type") != "input_audio_buffer.append":
            self.changes_sent += 1
        return self._send(conn, json.dumps(event))

    # -- upstream → client --------------------------------------------------------------------

    def _event(
        self, conn: RealtimeConnection, text: str, data: dict[str, Any]
    ) -> Sequence[DriverOutput]:
        if self._done or self.speech.defer(text, data):
            return []
        self.changes_heard = self.changes_sent
        if self.mirror is not None:
            self.mirror.observe(data)
        out = self._relayed(conn, text, data)
        if self.after_event is not None:
            out = [*out, *self.after_event(self, conn)]
        return out

    def _relayed(
        self, conn: RealtimeConnection, text: str, data: dict[str, Any]
    ) -> Sequence[DriverOutput]:
        if self.hook is not None and (replaced := self.hook(self, conn, data)) is not None:
            return replaced
        text = self.client_text(text, data)
        kind = str(data.get("type"))
        rid = records.response_id_of(data)
        if (rid is not None and rid in self._ended_here) or self.speech.echo(data):
            return []
        forward = Forward(text, kind, rid)
        played = (
            self.playout.upstream(conn, data, forward, self._host.playout_full)
            if conn.server_playout and self._host is not None
            else None
        )
        if played is not None:
            return played
        match kind:
            case "response.output_audio.delta":
                return [Forward(text, kind, rid, media=True)]
            case "response.created" if rid:
                self._requested = max(0, self._requested - 1)
                self._active[rid] = dict(data["response"])
                self._arm()
                if self._host is not None:
                    self._host.response_started()
            case "response.done":
                if rid:
                    self._active.pop(rid, None)
                self._arm()
                finished = records.response_finished(data, self._priced_model())
                out: list[DriverOutput] = [finished] if finished is not None else []
                return [*out, forward, *(self.playout.ended(conn, rid) if rid else [])]
            case "conversation.item.input_audio_transcription.completed":
                model = records.transcription_model(self.session or {}) or "unknown"
                heard = records.transcription_done(data, model)
                return [heard, forward] if heard is not None else [forward]
            case "session.created" | "session.updated" if isinstance(data.get("session"), dict):
                self.session = data["session"]
            case "rate_limits.updated" if isinstance(data.get("rate_limits"), list):
                return [self._rate_limits(data, forward)]
        return [forward]

    def playout_cut(self, conn: RealtimeConnection, cut: PlayoutCut) -> list[DriverOutput]:
        """The upstream's copy of the item keeps what the user heard (it answers with
        ``conversation.item.truncated``, passed on like any event)."""
        if self.speech.said(cut.response_id):  # the upstream has its words only
            return list(
                conn.output_audio_cleared(
                    cut.response_id, cut.item_id, cut.content_index, cut.played_ms
                )
            )
        truncate, out = self.playout.cut(conn, cut)
        return [*self.send_upstream(conn, truncate), *out]

    def playout_stopped(self, conn: RealtimeConnection, response_id: str) -> list[DriverOutput]:
        return self.playout.stopped(conn, response_id)

    def _rate_limits(self, data: dict[str, Any], forward: Forward) -> Forward:
        if self._host is None:
            return forward
        merged = self._host.rate_limits.from_upstream(data["rate_limits"])
        if merged == data["rate_limits"]:
            return forward
        return Forward(json.dumps({**data, "rate_limits": merged}), forward.type)

    def _priced_model(self) -> str:
        model = (self.session or {}).get("model")
        return model if isinstance(model, str) and model else self.model

    def _ended(self, rid: str, status: str, details: dict[str, Any]) -> Forward:
        """A ``response.done`` voxgate writes for a response the upstream will not finish."""
        self._ended_here.add(rid)
        response = {**self._active.pop(rid, {"id": rid, "object": "realtime.response"})}
        response.update(status=status, status_details=details)
        done = {"type": "response.done", "event_id": new_id("event"), "response": response}
        return Forward(json.dumps(done), "response.done", rid)

    def _opened(
        self, conn: RealtimeConnection, created: dict[str, Any], early: list[tuple[str, Any]]
    ) -> list[DriverOutput]:
        self.session = created.get("session")
        self.upstream_session_id = (self.session or {}).get("id")
        log.info(
            "session %s relayed to upstream %s as %s",
            conn.session_id,
            self.upstream.name,
            self.upstream_session_id,
        )
        if self.mirror is not None:
            self.mirror.observe(created)
            self.mirror.user_audio.max_bytes = conn.budget.limits.max_bytes
        out: list[DriverOutput] = []
        if self.announce == "created":
            out.append(Forward(json.dumps(created), "session.created"))
        elif self.announce == "updated":
            updated = {**created, "type": "session.updated", "event_id": new_id("event")}
            out.append(Forward(json.dumps(updated), "session.updated"))
        for text, data in early:
            out += self._event(conn, text, data)
        if self.after_event is not None:
            out += self.after_event(self, conn)
        return out

    def _lost(
        self, conn: RealtimeConnection, exc: UpstreamError, phase: Literal["connect", "session"]
    ) -> list[DriverOutput]:
        if self._done:
            return []
        self._done = True
        for task in self._tasks:
            task.cancel()
        log.warning("session %s lost its upstream: %s", conn.session_id, exc.message)
        failure = {"type": "server_error", "code": LOST_CODE, "message": exc.message}
        cut = tuple(self._active)
        details = {"type": "failed", "error": failure}
        out: list[DriverOutput] = self.speech.stop(conn, details, "failed")
        for rid in cut:
            out += [self._ended(rid, "failed", details)]
            out += self.playout.ended(conn, rid)  # what it played so far plays out
        asked, self._requested = self._requested, 0
        lost = UpstreamLost(exc, phase, cut, asked)
        if self.on_lost is not None:
            return out + list(self.on_lost(conn, lost))
        if self._host is not None:
            message = f"The session's upstream Realtime service failed: {exc.message}. " + (
                "Try again shortly." if exc.retryable else "Ask the server's operator."
            )
            self._host.end("upstream_lost", LOST_CODE, message, 1011)
        return out

    # -- client → upstream --------------------------------------------------------------------

    def _send(
        self, conn: RealtimeConnection, text: str, written: Written = None
    ) -> list[DriverOutput]:
        if self._done:
            return []
        self._outgoing.append((text, written))
        self._pending_chars += len(text)
        self._wake.set()
        if self._pending_chars > MAX_PENDING_BYTES:
            stalled = UpstreamStalled(
                f"upstream '{self.upstream.name}' did not take {self._pending_chars} "
                "characters of client events"
            )
            return self._lost(conn, stalled, "session" if self.session else "connect")
        return []

    def _arm(self) -> None:
        """Watch for a stall while an upstream response is expected (and only then), from
        now: called whenever that may change and whenever the upstream speaks."""
        if self._expected and self._host is not None:
            self._stall_at = self._host.clock.monotonic() + self.upstream.stall_timeout_s
            self._expecting.set()
        else:
            self._stall_at = None

    # -- tasks --------------------------------------------------------------------------------

    async def _run(self, host: DriverHost) -> None:
        phase: Literal["connect", "session"] = "connect"
        link: UpstreamConnection | None = None
        try:
            if self._prepared is not None:
                (link, created, early), self._prepared = self._prepared, None
            else:
                link = await self.protocol.connect(
                    self.upstream, self.model, safety_identifier=self.safety_identifier
                )
                created, early = await self._handshake(link, host.clock)
            phase = "session"
            await host.post(lambda conn: self._opened(conn, created, early))
            self._tasks.append(host.spawn(self._write(link), f"upstream:{self.upstream.name}:w"))
            self._arm()  # a response asked for before the session opened: counted from now
            self._tasks.append(host.spawn(self._watch(host), f"upstream:{self.upstream.name}:s"))
            await self._read(host, link)
        except UpstreamError as exc:
            failed = exc
            await host.post(lambda conn: self._lost(conn, failed, phase))
        except Exception as exc:  # a bug must end this upstream link, not the server
            log.exception("relaying to upstream %s failed", self.upstream.name)
            bug = UpstreamError(f"internal error: {type(exc).__name__}", retryable=False)
            await host.post(lambda conn: self._lost(conn, bug, phase))
        finally:
            if link is not None:
                await link.close()

    async def _recv(self, link: UpstreamConnection) -> tuple[str, dict[str, Any]]:
        text = await link.recv()
        try:
            data = json.loads(text)
        except ValueError:
            raise _Refused(
                f"upstream '{self.upstream.name}' sent a frame that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise _Refused(f"upstream '{self.upstream.name}' sent a frame that is not an event")
        return text, data

    async def _handshake(
        self, link: UpstreamConnection, clock: Clock
    ) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """The upstream's ``session.created``, with the initial configuration applied, and
        the events that came before the answer to it (relayed after it); within
        ``stall_timeout_s`` on ``clock``."""
        try:
            created, early = await within(clock, self.upstream.stall_timeout_s, self._open(link))
        except TimeoutError:
            raise UpstreamStalled(
                f"upstream '{self.upstream.name}' did not open the session within "
                f"{self.upstream.stall_timeout_s:g} s"
            ) from None
        if self.replay:
            await replay(link, self.replay, self.upstream.name, self._recv, clock)
        return created, early

    async def _open(self, link: UpstreamConnection) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        name, early = self.upstream.name, list[tuple[str, Any]]()
        _, created = await self._recv(link)
        if created.get("type") != "session.created":
            raise _Refused(f"upstream '{name}' opened with {described(created)}")
        if not self.initial:
            return created, early
        await link.send(json.dumps({"type": "session.update", "session": self.initial}))
        while True:
            text, data = await self._recv(link)
            if data.get("type") == "session.updated":
                return {**created, "session": data.get("session")}, early
            if data.get("type") == "error":
                raise _Refused(
                    f"upstream '{name}' refused the session's configuration ({described(data)})"
                )
            early.append((text, data))

    async def _read(self, host: DriverHost, link: UpstreamConnection) -> None:
        while True:
            text, data = await self._recv(link)
            self._arm()  # the upstream spoke: a stall counts from here
            await self.speech.quiet()  # nothing overtakes what the session says itself
            await host.post(self._delivery(text, data))

    async def _watch(self, host: DriverHost) -> None:
        """No upstream event for ``stall_timeout_s`` (on the session's clock) while one is
        expected: the upstream is lost as stalled."""
        clock = host.clock
        while True:
            at = self._stall_at
            if at is None:
                self._expecting.clear()
                await self._expecting.wait()
            elif (wait := at - clock.monotonic()) > 0:
                await clock.sleep(wait)  # `_arm` may have moved it on meanwhile: look again
            elif self.speech.busy:
                self._arm()  # the reader waits for the session's own words on purpose
            else:
                break
        stalled = UpstreamStalled(
            f"upstream '{self.upstream.name}' sent nothing for "
            f"{self.upstream.stall_timeout_s:g} s while a response was expected"
        )
        await host.post(lambda conn: self._lost(conn, stalled, "session"))

    def _delivery(self, text: str, data: dict[str, Any]) -> Progress:
        return lambda conn: self._event(conn, text, data)

    async def _write(self, link: UpstreamConnection) -> None:
        if self.mirror is not None:
            self.mirror.user_audio.link_opened()
        try:
            while True:
                while not self._outgoing:
                    self._wake.clear()
                    await self._wake.wait()
                text, written = self._outgoing.popleft()
                self._pending_chars -= len(text)
                if self.mirror is not None:
                    self.mirror.user_audio.write(written)
                await link.send(text)
        except UpstreamError:
            return  # the reader sees the same close and reports it
