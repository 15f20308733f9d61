"""One live conversation: a task group around the sans-IO connection.

Tasks (all owned by the session's TaskGroup, all named):
- reader: transport frames → inbox (pauses when the inbox is full);
- writer: outbox → transport (control lane ahead of media);
- watchdog: maximum duration and idle timeout, as sleeps until the next deadline;
- one task per running response (see `response.py`);
- per sideband client (`attach`): its own reader and writer, so a slow sideband never holds
  up the primary client.
Where the transport plays reply audio itself (WebRTC, SIP: `Playout`), audio goes to the
playout instead of `response.output_audio.delta` events, and the playout reports back.
The main loop is the only code that touches the connection. Close is idempotent, ordered
(stop input, stop responses, flush what is queued, say why, close) and time-bounded.

An optional `SessionObserver` (the ledger and budgets) hears each response's usage and each
user turn's words from tasks beside the main loop; the ``response.done`` (or billed
transcription event) that shows the usage is held in the outbox until the observer has it.
Its verdict comes back through the inbox: rate limits, budget warnings, or a cut-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import assert_never

from ..audio import PCM16, AudioFormat, FormatConverter
from ..control.budgets import BudgetNotice, BudgetVerdict
from ..control.identity import Principal
from ..control.observer import SessionEnd, SessionObserver
from ..protocol import events as ev
from ..protocol.commands import (
    CancelResponse,
    ClearOutputAudio,
    EndOfAudio,
    InputAudio,
    PlayAudio,
    ResponseFinished,
    StartResponse,
    TranscribeItem,
    UserInput,
)
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.errors import ProtocolError
from .backlog import Backlog
from .clock import Clock, SystemClock
from .engines import EngineSet
from .fairness import in_slices
from .inbox import Ended, Inbox
from .listener import Listener
from .outbox import Outbox
from .response import Progress, ResponseRunner
from .transport import BoundedPlayout, Playout, Transport, TransportClosed, TransportStalled

log = logging.getLogger(__name__)
# The keys a DTMF event may carry (RFC 4733 events 0-15).
DTMF_KEYS = frozenset("0123456789*#ABCD")
# Server events a sideband client may fall behind by before it is disconnected.
SIDEBAND_BACKLOG = 4096
SLOW_CLIENT = "slow_client"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_duration_s: float = 3600.0
    # No client event and no response running for this long ends the session; None = never.
    idle_timeout_s: float | None = 600.0
    inbox_capacity: int = 256
    # How far reply audio may run ahead of real time; None sends it as fast as it is made.
    audio_lead_s: float | None = None
    close_timeout_s: float = 5.0
    # The language model's context window in tokens, for truncation; None: unknown.
    llm_context_tokens: int | None = None
    # Server events queued for a client that is not reading them, in characters of JSON
    # (≈ bytes); past this the client is disconnected (close 1008, `client_too_slow`).
    max_outbox_bytes: int = 32 * 1024 * 1024
    # Text one response may hand to speech synthesis; None = no bound.
    max_speech_chars: int | None = 20_000


@dataclass(frozen=True, slots=True)
class _Frame:
    raw: str | bytes


class Session:
    def __init__(
        self,
        connection: RealtimeConnection,
        engines: EngineSet,
        transport: Transport,
        *,
        limits: SessionLimits = SessionLimits(),
        clock: Clock | None = None,
        playout: Playout | None = None,
        principal: Principal | None = None,
        observer: SessionObserver | None = None,
    ) -> None:
        self.connection = connection
        # Who opened the session (None: built directly, e.g. in tests); calls check it.
        self.principal = principal
        self.engines = engines
        self.transport = transport
        self.limits = limits
        self.clock = clock or SystemClock()
        self.outbox = Outbox()
        self.inbox: Inbox[_Frame | Progress] = Inbox(limits.inbox_capacity)
        self._responses: dict[str, asyncio.Task[None]] = {}
        self._started = self.clock.monotonic()
        self._last_activity = self._started
        self.ended: Ended | None = None
        self.listener = Listener(engines, self.inbox.put, self._spawn, self.clock)
        connection.expires_at = int(self.clock.wall() + limits.max_duration_s)
        self.playout = playout
        connection.server_playout = playout is not None
        if playout is not None:
            playout.bind(self._playout_stopped)
        self._sidebands: set[Backlog] = set()
        # Media-track audio ↔ the session's formats; streaming, so chunks join seamlessly.
        self._from_track: FormatConverter | None = None
        self._to_playout: FormatConverter | None = None
        self.observer = observer

    @property
    def id(self) -> str:
        return self.connection.session_id

    def end(
        self, reason: str, error_code: str | None = None, message: str = "", code: int = 1000
    ) -> None:
        """Ask the session to end (from any task); idempotent."""
        self.inbox.end(Ended(reason, error_code, message, code))

    async def run(self) -> Ended:
        """Serve the session until it ends; returns why it ended."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            reader = tg.create_task(self._read(), name=f"{self.id}:reader")
            writer = tg.create_task(self._write(), name=f"{self.id}:writer")
            watchdog = tg.create_task(self._watch(), name=f"{self.id}:watchdog")
            self._apply(self.connection.start())
            ended = await self._main()
            self.ended = ended
            reader.cancel()
            watchdog.cancel()
            await self._close(ended, writer)
        if self.observer is not None:
            end = SessionEnd(ended.reason, ended.error_code, ended.message)
            try:
                await self.observer.session_ended(end)
            except Exception:  # the books are not worth a crash of the server
                log.exception("recording the end of session %s failed", self.id)
        return ended

    async def _main(self) -> Ended:
        while True:
            msg = await self.inbox.get()
            if isinstance(msg, Ended):
                return msg
            if isinstance(msg, _Frame):
                self._last_activity = self.clock.monotonic()
                outputs = self.connection.receive(msg.raw)
            else:
                outputs = msg(self.connection)
            for i, group in enumerate(in_slices(outputs)):
                if i:
                    await asyncio.sleep(0)  # let other sessions run between slices
                self._apply(group)

    # -- outputs --------------------------------------------------------------------------

    def _apply(self, outputs: list[Output]) -> None:
        # A record of usage holds back the event that shows it (the next one).
        hold: asyncio.Future[None] | None = None
        for out in outputs:
            match out:
                case ev.ServerEvent():
                    self._send(out, hold)
                    hold = None
                case ResponseFinished():
                    if self.observer is not None:
                        hold = self._observe(self.observer.response_finished(out), True)
                case UserInput():
                    if self.observer is not None:
                        billed = out.transcription_model is not None
                        hold = self._observe(self.observer.user_input(out), billed)
                case StartResponse(plan=plan):
                    runner = ResponseRunner(
                        plan,
                        self.engines,
                        self.inbox.put,
                        self._media_space,
                        before=self.listener.ready(plan.context),
                        lead_s=self.limits.audio_lead_s,
                        clock=self.clock,
                        context_tokens=self.limits.llm_context_tokens,
                        max_speech_chars=self.limits.max_speech_chars,
                    )
                    self._start_response(plan.response_id, runner)
                    if self.observer is not None:
                        self._observe(self.observer.before_response(), False)
                case CancelResponse(response_id=rid):
                    self._cancel_response(rid)
                case InputAudio(data=data, format=fmt):
                    self._apply(self.listener.audio(self.connection, data, fmt))
                case TranscribeItem(item_id=item_id, audio=audio, format=fmt):
                    self._apply(self.listener.transcribe(self.connection, item_id, audio, fmt))
                case PlayAudio():
                    self._play(out)
                case EndOfAudio(response_id=rid):
                    if self.playout is not None:
                        self.playout.end(rid)
                case ClearOutputAudio(response_id=rid):
                    cut = self.playout.clear(rid) if self.playout is not None else None
                    if cut is not None:
                        self._apply(
                            self.connection.output_audio_cleared(
                                cut.response_id, cut.item_id, cut.content_index, cut.played_ms
                            )
                        )
                case _:
                    assert_never(out)

    def _send(self, event: ev.ServerEvent, hold: asyncio.Future[None] | None = None) -> None:
        text = event.to_json()
        rid = getattr(event, "response_id", None)
        if isinstance(event, ev.ResponseDelta) and event.type == "response.output_audio.delta":
            self.outbox.put_media(text, rid or "")
            return
        if rid is None and isinstance(event, ev.ResponseLifecycle):
            rid = event.response.get("id")
        self.outbox.put_control(text, rid, hold)
        if self.outbox.queued_chars > self.limits.max_outbox_bytes:
            self._too_slow(f"{self.outbox.queued_chars} bytes of server events went unread")

    # -- observer -------------------------------------------------------------------------

    def _observe(self, work: Awaitable[BudgetVerdict], hold: bool) -> asyncio.Future[None] | None:
        """Run ``work`` beside the main loop; returns a future done when it is, for holding
        the event that must not go out before it (None when nothing is held)."""
        gate = asyncio.get_running_loop().create_future() if hold else None

        async def run() -> None:
            verdict: BudgetVerdict | None = None
            try:
                verdict = await work
            except Exception:  # never let the books end a conversation
                log.exception("the observer of session %s failed", self.id)
            finally:
                if gate is not None and not gate.done():
                    gate.set_result(None)
            if verdict is not None and verdict != BudgetVerdict():
                await self.inbox.put(lambda _: self._heed(verdict))

        self._spawn(run(), "observer")
        return gate

    def _heed(self, verdict: BudgetVerdict) -> list[Output]:
        """What the client must hear about its budgets; a cut-off ends the session."""
        out: list[Output] = []
        if verdict.rate_limits is not None:
            out.append(ev.RateLimitsUpdated(rate_limits=verdict.rate_limits))
        for notice in verdict.warnings:
            error = ProtocolError(notice.message, code="budget_warning", type="budget_warning")
            out.append(self.connection.error(error))
        if verdict.exceeded is not None:
            out += self._cut_off(verdict.exceeded)
        return out

    def _cut_off(self, notice: BudgetNotice) -> list[Output]:
        out: list[Output] = []
        failure = {"type": "budget_exceeded", "code": "budget_exceeded", "message": notice.message}
        for rid in list(self.connection.responses):
            details = {"type": "cancelled", "reason": None, "error": failure}
            out += self.connection.finish_response(rid, "cancelled", details)
            out.append(CancelResponse(rid))
        self.end("budget_exceeded", "budget_exceeded", notice.message, code=1008)
        return out

    def _play(self, out: PlayAudio) -> None:
        if self.playout is None:
            return
        src, dst = AudioFormat.from_type(out.format), self.playout.format
        if self._to_playout is None or (self._to_playout.src, self._to_playout.dst) != (src, dst):
            self._to_playout = FormatConverter(src, dst)
        audio = self._to_playout.process(out.data)
        self.playout.play(out.response_id, out.item_id, out.content_index, audio)

    async def _media_space(self) -> None:
        """Where a response waits before it makes more audio: the outbox's media lane, and
        a bounded playout's queue."""
        await self.outbox.media_space()
        if isinstance(self.playout, BoundedPlayout):
            await self.playout.room()

    async def _playout_stopped(self, response_id: str) -> None:
        await self.inbox.put(lambda c: c.output_audio_stopped(response_id))

    async def track_audio(self, audio: bytes, fmt: AudioFormat = PCM16) -> None:
        """Microphone audio from a media track (24 kHz PCM16 mono unless ``fmt`` says else,
        e.g. 8 kHz G.711 from a phone line): the input buffer, as if appended, in whatever
        input format the session has. Like appends, it keeps the session from being idle."""

        def append(conn: RealtimeConnection) -> list[Output]:
            self._last_activity = self.clock.monotonic()
            dst = AudioFormat.from_type(conn.input_format)
            track = self._from_track
            if track is None or (track.src, track.dst) != (fmt, dst):
                track = self._from_track = FormatConverter(fmt, dst)
            return conn.append_track_audio(track.process(audio))

        await self.inbox.put(append)

    async def dtmf(self, digit: str) -> None:
        """A telephone keypad press (``0-9 * # A-D``) on the caller's line: the client and
        its sidebands see ``input_audio_buffer.dtmf_event_received``."""
        if digit not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {digit!r}; expected one of 0-9 * # A-D")

        def received(conn: RealtimeConnection) -> list[Output]:
            self._last_activity = self.clock.monotonic()
            return [ev.DtmfEventReceived(event=digit, received_at=int(self.clock.wall()))]

        await self.inbox.put(received)

    async def attach(self, transport: Transport) -> None:
        """Serve a sideband client on this session until it leaves or the session ends: it
        sees the server events from here on (after a ``session.created``) and may send client
        events, which join the primary client's in one order."""
        queue = Backlog(SIDEBAND_BACKLOG, self.limits.max_outbox_bytes)
        queue.put_nowait(self.connection.session_created().to_json())
        self._sidebands.add(queue)

        async def read() -> None:
            with contextlib.suppress(TransportClosed):
                while True:
                    await self.inbox.put(_Frame(await transport.receive()))

        async def write() -> None:
            with contextlib.suppress(TransportClosed):
                while (text := await queue.get()) is not None:
                    await transport.send(text)

        tasks = [
            asyncio.create_task(read(), name=f"{self.id}:sideband-reader"),
            asyncio.create_task(write(), name=f"{self.id}:sideband-writer"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._sidebands.discard(queue)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # the peer may be gone already
                await transport.close(1000, "session ended" if self.ended else "")

    def _mirror(self, text: str | None) -> None:
        for queue in list(self._sidebands):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("sideband of %s fell too far behind; disconnecting it", self.id)
                self._sidebands.discard(queue)
                queue.clear()
                queue.put_nowait(None)

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        return self._tg.create_task(work, name=f"{self.id}:{name}")  # type: ignore[arg-type]

    def _start_response(self, rid: str, runner: ResponseRunner) -> None:
        task = self._tg.create_task(runner.run(), name=f"{self.id}:{rid}")
        self._responses[rid] = task
        self.listener.detector.pause_idle()
        task.add_done_callback(lambda _: self._response_ended(rid))

    def _response_ended(self, rid: str) -> None:
        self._responses.pop(rid, None)
        if not self._responses:
            self.listener.detector.resume_idle()
        # The idle time counts from the end of the last response, not from its start.
        self._last_activity = max(self._last_activity, self.clock.monotonic())

    def _cancel_response(self, rid: str) -> None:
        task = self._responses.pop(rid, None)
        if task is not None:
            task.cancel()
        self.outbox.purge(rid)

    # -- tasks ----------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                await self.inbox.put(_Frame(await self.transport.receive()))
        except TransportClosed:
            self.end("client_closed")

    async def _write(self) -> None:
        try:
            while (text := await self.outbox.get()) is not None:
                self._mirror(text)
                await self.transport.send(text)
        except TransportStalled as exc:
            self._too_slow(str(exc))
        except TransportClosed:
            self.end("client_closed")
        finally:
            self._mirror(None)

    async def _watch(self) -> None:
        limits, clock = self.limits, self.clock
        deadline = self._started + limits.max_duration_s
        while True:
            idle_at = (
                self._last_activity + limits.idle_timeout_s
                if limits.idle_timeout_s is not None
                else float("inf")
            )
            await clock.sleep(min(deadline, idle_at) - clock.monotonic())
            now = clock.monotonic()
            if now >= deadline:
                self.end(
                    "expired",
                    "session_duration_exceeded",
                    "Your session hit its maximum duration of "
                    f"{limits.max_duration_s:g} seconds; open a new session to go on.",
                )
                return
            if self._responses:
                self._last_activity = max(self._last_activity, now)
            # Re-read the last activity: client events may have arrived during the sleep.
            elif limits.idle_timeout_s is not None and (
                now >= self._last_activity + limits.idle_timeout_s
            ):
                self.end(
                    "idle",
                    "idle_timeout",
                    f"The session was closed after {limits.idle_timeout_s:g} seconds "
                    "without any client event. Send events (or audio) to keep it open.",
                )
                return

    async def _done_within(self, task: asyncio.Task[None], seconds: float) -> bool:
        """Wait for ``task`` at most ``seconds`` of the session's clock (not the loop's)."""
        if seconds <= 0:
            await asyncio.sleep(0)  # one turn of the loop: a task that can finish at once does
            return task.done()
        timer = asyncio.create_task(self.clock.sleep(seconds), name=f"{self.id}:close-timer")
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return task.done()

    async def _close(self, ended: Ended, writer: asyncio.Task[None]) -> None:
        self.listener.close()
        for task in list(self._responses.values()):
            task.cancel()
        # A response cut short by the close still owes the client its response.done.
        for rid in list(self.connection.responses):
            self._apply(self.connection.finish_response(rid, "cancelled", {"type": "cancelled"}))
        if ended.reason == SLOW_CLIENT:
            self.outbox.discard()  # it will never be read: free it now
        if ended.error_code:
            err = ProtocolError(ended.message, code=ended.error_code)
            self._send(self.connection.error(err))
        self.outbox.close()
        # One deadline for flushing and the close frame: a client that reads nothing holds
        # the session at most close_timeout_s after it was asked to end.
        deadline = self.clock.monotonic() + self.limits.close_timeout_s
        if not await self._done_within(writer, self.limits.close_timeout_s):
            writer.cancel()
        # The close frame waits behind unread data too: past the deadline the session ends
        # anyway (its slot and memory are freed; the server drops the socket).
        closing = asyncio.create_task(
            self.transport.close(ended.close_code, ended.reason), name=f"{self.id}:close"
        )
        if not await self._done_within(closing, deadline - self.clock.monotonic()):
            log.info("client of %s did not take the close frame; dropping it", self.id)
            closing.cancel()
            await asyncio.wait({closing})
        if not closing.cancelled() and closing.exception() is not None:
            # The peer may be gone already; closing is best effort.
            log.debug("closing transport of %s failed: %r", self.id, closing.exception())

    def _too_slow(self, why: str) -> None:
        self.end(
            SLOW_CLIENT,
            "client_too_slow",
            f"The session was closed because the client stopped reading server events ({why}). "
            "Read events as they arrive.",
            code=1008,
        )
