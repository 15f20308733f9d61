"""One live conversation: a task group around the sans-IO connection and the driver that
serves it (the embedded pipeline or an upstream relay; see `driver.py`).

Tasks (all owned by the session's TaskGroup, all named):
- reader: transport frames → inbox (pauses when the inbox is full);
- writer: outbox → transport (control lane ahead of media);
- watchdog: maximum duration and idle timeout, as sleeps until the next deadline;
- the driver's (one per running response in the pipeline, see `response.py`);
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
import logging
from collections.abc import Awaitable, Sequence
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
    ToolApproval,
    TranscribeItem,
    UserInput,
)
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.mcp import ListMcpTools
from .clock import Clock, SystemClock
from .disclosure import Disclosure, HeldEvents
from .driver import PLAYOUT_RATE, Driver, DriverHost, DriverOutput, Forward, Progress
from .engines import EngineSet
from .fairness import in_slices
from .inbox import Ended, Inbox
from .mcp import SessionMcp
from .outbox import Outbox
from .pipeline import PipelineDriver
from .rate_limits import RateLimitBook
from .recording import CallRecorder
from .relay import RelayDriver
from .sidebands import Sidebands
from .tool_flow import SessionTools
from .transport import (
    BoundedPlayout,
    Playout,
    TappedPlayout,
    Transport,
    TransportClosed,
    TransportStalled,
)

log = logging.getLogger(__name__)
__all__ = ["PLAYOUT_RATE", "Session", "SessionLimits"]
# The keys a DTMF event may carry (RFC 4733 events 0-15).
DTMF_KEYS = frozenset("0123456789*#ABCD")
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
        driver: Driver | None = None,
        tools: SessionTools | None = None,
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
        self._started = self.clock.monotonic()
        self._last_activity = self._started
        self.ended: Ended | None = None
        connection.expires_at = int(self.clock.wall() + limits.max_duration_s)
        self.playout = playout
        connection.server_playout = playout is not None
        if playout is not None:
            playout.bind(self._playout_stopped)
        self.sidebands = Sidebands(connection.session_id, limits.max_outbox_bytes)
        # Media-track audio ↔ the formats of the session and its driver, and reply audio →
        # the playout's format; streaming, so chunks join seamlessly.
        self._from_track: FormatConverter | None = None
        self._to_playout: FormatConverter | None = None
        self.observer = observer
        self.rate_limits = RateLimitBook()
        # Server tools (None: none configured): their calls run here, never on the client.
        self.tools = tools
        if tools is not None:
            tools.bind(self.inbox.put, self.clock)
        # MCP listings and calls; the server sets its audit hook at admission. It belongs
        # to the session, not the driver, so a driver switch keeps it.
        self.mcp = SessionMcp(clock=self.clock)
        # Bound when the session starts serving (its task group exists then).
        self.driver: Driver = driver or PipelineDriver(engines, tools=tools)
        # Set before `run` by `disclose` and `record` (admission does, per policy).
        self.disclosure: Disclosure | None = None
        self._held = HeldEvents[_Frame](lambda frame: len(frame.raw))
        self.recorder: CallRecorder | None = None

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
            self.driver.bind(self._driver_host())
            reader = tg.create_task(self._read(), name=f"{self.id}:reader")
            writer = tg.create_task(self._write(), name=f"{self.id}:writer")
            watchdog = tg.create_task(self._watch(), name=f"{self.id}:watchdog")
            self._apply(self.driver.start(self.connection))
            ended = await self._main()
            self.ended = ended
            reader.cancel()
            watchdog.cancel()
            await self._close(ended, writer)
        if self.recorder is not None:
            self.recorder.close()
        if self.observer is not None:
            end = SessionEnd(ended.reason, ended.error_code, ended.message)
            try:
                await self.observer.session_ended(end)
            except Exception:  # the books are not worth a crash of the server
                log.exception("recording the end of session %s failed", self.id)
        return ended

    async def _main(self) -> Ended:
        while True:
            # Client events held back during the disclosure come first once it is generated.
            held = self._held.release(self._disclosing())
            msg = held if held is not None else await self.inbox.get()
            if isinstance(msg, Ended):
                return msg
            ahead = self._disclosing()
            if held is None and isinstance(msg, _Frame) and self._held.keep(msg, ahead):
                continue
            if isinstance(msg, _Frame):
                self._last_activity = self.clock.monotonic()
                outputs = self.driver.receive(self.connection, msg.raw)
            else:
                outputs = msg(self.connection)
            for i, group in enumerate(in_slices(outputs)):
                if i:
                    await asyncio.sleep(0)  # let other sessions run between slices
                self._apply(group)

    def _disclosing(self) -> bool:
        return self.disclosure is not None and self.disclosure.generating(self.connection)

    # -- disclosure and recording ---------------------------------------------------------

    def disclose(self, text: str) -> bool:
        """Speak ``text`` before anything else (see disclosure.py); call before `run`.
        False where the driver plays no audio of voxgate's (direct mode): nothing is said."""
        if not isinstance(self.driver, PipelineDriver | RelayDriver):
            log.warning("session %s served by %s: disclosure not spoken", self.id, self.driver.name)
            return False
        self.disclosure = Disclosure(text)
        return True

    def record(self, recorder: CallRecorder) -> None:
        """Record the session (see recording.py); call before `run`."""
        self.recorder = recorder
        playout = self.playout
        if isinstance(playout, TappedPlayout):
            # The format is read per frame: an outbound call's codec is set when it is answered.
            playout.tap(lambda audio: recorder.voxgate(audio, playout.format))

    def _begin_disclosure(self) -> None:
        """Right after the session's ``session.created``, whoever made it."""
        if self.disclosure is None or self.disclosure.response_id is not None:
            return
        try:
            self._apply(self.disclosure.begin(self.connection))
        except ProtocolError as exc:
            log.error("session %s could not speak its disclosure: %s", self.id, exc.message)
            self.disclosure = None

    # -- outputs --------------------------------------------------------------------------

    def switch_driver(self, driver: Driver, reason: str) -> None:
        """Serve the rest of the session with ``driver`` (failover, renewal): the current
        one is closed, the new one bound. Main loop only: call it from a `Progress` posted
        to the inbox, which returns whatever the client should hear about the change."""
        old = self.driver
        log.info("session %s: %s → %s (%s)", self.id, old.name, driver.name, reason)
        old.close()
        driver.bind(self._driver_host())
        self.driver = driver

    def _driver_host(self) -> DriverHost:
        # Not kept by the session: only a driver holds it (and drops it when closed), so a
        # closed session is no reference cycle and is freed as soon as it is let go.
        return DriverHost(
            session_id=self.id,
            post=self.inbox.put,
            spawn=self._spawn,
            clock=self.clock,
            limits=self.limits,
            media_space=self._media_space,
            response_started=self._response_started,
            touch=self._touch,
            end=self.end,
            rate_limits=self.rate_limits,
            mcp=self.mcp,
            switch=self.switch_driver,
            engines=self.engines,
            playout_full=lambda: isinstance(self.playout, BoundedPlayout) and self.playout.full(),
        )

    def _apply(self, outputs: Sequence[DriverOutput]) -> None:
        # A record of usage holds back the event that shows it (the next one).
        hold: asyncio.Future[None] | None = None
        for out in outputs:
            match out:
                case ev.ServerEvent():
                    self._send(out, hold)
                    hold = None
                    if isinstance(out, ev.SessionCreated):
                        self._begin_disclosure()
                case Forward():
                    self._forward(out, hold)
                    hold = None
                    if out.type == "session.created":
                        self._begin_disclosure()
                case ResponseFinished():
                    if self.observer is not None:
                        hold = self._observe(self.observer.response_finished(out), True)
                case UserInput():
                    if self.observer is not None:
                        billed = out.transcription_model is not None
                        hold = self._observe(self.observer.user_input(out), billed)
                case StartResponse():
                    self._apply(self.driver.command(self.connection, out))
                    self._response_started()
                case CancelResponse(response_id=rid):
                    self._apply(self.driver.command(self.connection, out))
                    self.outbox.purge(rid)
                    self._interrupted(rid)
                case ToolApproval():
                    if self.tools is not None:
                        self.tools.approval(out)
                    self._apply(self.mcp.approvals.approval(self.connection, out))
                case InputAudio() | TranscribeItem():
                    if isinstance(out, InputAudio) and self.recorder is not None:
                        self.recorder.caller(out.data, AudioFormat.from_type(out.format))
                    self._apply(self.driver.command(self.connection, out))
                case ListMcpTools():
                    self.mcp.list_tools(out, self.inbox.put, self._spawn)
                case PlayAudio():
                    self._play(out)
                case EndOfAudio(response_id=rid):
                    if self.playout is not None:
                        self.playout.end(rid)
                case ClearOutputAudio(response_id=rid):
                    cut = self.playout.clear(rid) if self.playout is not None else None
                    if cut is not None:
                        self._apply(self.driver.playout_cut(self.connection, cut))
                        self._interrupted(cut.response_id)  # cut while still playing
                case _:
                    assert_never(out)

    def _interrupted(self, response_id: str) -> None:
        """A barge-in cancels what the response was asking the user to confirm."""
        if self.tools is not None:
            self._apply(self.tools.interrupted(self.connection, response_id))
        self._apply(self.mcp.approvals.interrupted(self.connection, response_id))

    def _send(self, event: ev.ServerEvent, hold: asyncio.Future[None] | None = None) -> None:
        text = event.to_json()
        rid = getattr(event, "response_id", None)
        if isinstance(event, ev.ResponseDelta) and event.type == "response.output_audio.delta":
            self.outbox.put_media(text, rid or "")
            if self.recorder is not None and not isinstance(self.playout, TappedPlayout):
                self.recorder.sent(event, self.connection)  # the client plays it
            return
        if rid is None and isinstance(event, ev.ResponseLifecycle):
            rid = event.response.get("id")
        self._put_control(text, rid, hold)

    def _forward(self, event: Forward, hold: asyncio.Future[None] | None) -> None:
        if event.media:
            self.outbox.put_media(event.text, event.response_id or "")
        else:
            self._put_control(event.text, event.response_id, hold)

    def _put_control(self, text: str, rid: str | None, hold: asyncio.Future[None] | None) -> None:
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

    def _heed(self, verdict: BudgetVerdict) -> list[DriverOutput]:
        """What the client must hear about its budgets; a cut-off ends the session."""
        out: list[DriverOutput] = []
        if verdict.rate_limits is not None:
            merged = self.rate_limits.from_budget(verdict.rate_limits)
            out.append(ev.RateLimitsUpdated(rate_limits=merged))
        for notice in verdict.warnings:
            error = ProtocolError(notice.message, code="budget_warning", type="budget_warning")
            out.append(self.connection.error(error))
        if verdict.exceeded is not None:
            out += self._cut_off(verdict.exceeded)
        return out

    def _cut_off(self, notice: BudgetNotice) -> list[DriverOutput]:
        failure = {"type": "budget_exceeded", "code": "budget_exceeded", "message": notice.message}
        details = {"type": "cancelled", "reason": None, "error": failure}
        out = list(self.driver.stop_responses(self.connection, details))
        self.end("budget_exceeded", "budget_exceeded", notice.message, code=1008)
        return out

    def _play(self, out: PlayAudio) -> None:
        if self.playout is None:
            return
        src, dst = AudioFormat.from_type(out.format), self.playout.format
        if self._to_playout is None or (self._to_playout.src, self._to_playout.dst) != (src, dst):
            self._to_playout = FormatConverter(src, dst)
        audio = self._to_playout.process(out.data)
        if self.recorder is not None and not isinstance(self.playout, TappedPlayout):
            self.recorder.voxgate(audio, dst)  # as queued: this playout cannot say when heard
        self.playout.play(out.response_id, out.item_id, out.content_index, audio)

    async def _media_space(self) -> None:
        """Where a response waits before it makes more audio: the outbox's media lane, and
        a bounded playout's queue."""
        await self.outbox.media_space()
        if isinstance(self.playout, BoundedPlayout):
            await self.playout.room()

    async def _playout_stopped(self, response_id: str) -> None:
        await self.inbox.put(lambda c: self.driver.playout_stopped(c, response_id))

    async def track_audio(self, audio: bytes, fmt: AudioFormat = PCM16) -> None:
        """Microphone audio from a media track (24 kHz PCM16 mono unless ``fmt`` says else,
        e.g. 8 kHz G.711 from a phone line): the input buffer, as if appended, in whatever
        input format the session has. Like appends, it keeps the session from being idle."""

        def append(conn: RealtimeConnection) -> Sequence[DriverOutput]:
            self._last_activity = self.clock.monotonic()
            if self.disclosure is not None and self.disclosure.speaking(conn):
                if self.recorder is not None:  # recorded, not listened to
                    self.recorder.caller(audio, fmt)
                return []
            if isinstance(self.driver, PipelineDriver):  # takes any format: no 24 kHz hop
                return self.driver.track_audio(conn, audio, fmt)
            if self.recorder is not None:  # a relay makes no InputAudio of it
                self.recorder.caller(audio, fmt)
            if fmt == PCM16:
                return self.driver.track_audio(conn, audio)
            track = self._from_track
            if track is None or track.src != fmt:
                track = self._from_track = FormatConverter(fmt, PCM16)
            return self.driver.track_audio(conn, track.process(audio))

        await self.inbox.put(append)

    async def dtmf(self, digit: str) -> None:
        """A telephone keypad press (``0-9 * # A-D``) on the caller's line: the client and
        its sidebands see ``input_audio_buffer.dtmf_event_received``."""
        if digit not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {digit!r}; expected one of 0-9 * # A-D")

        def received(conn: RealtimeConnection) -> list[DriverOutput]:
            self._last_activity = self.clock.monotonic()
            return [ev.DtmfEventReceived(event=digit, received_at=int(self.clock.wall()))]

        await self.inbox.put(received)

    async def attach(self, transport: Transport) -> None:
        """Serve a sideband client on this session until it leaves or the session ends: it
        sees the server events from here on (after a ``session.created``) and may send client
        events, which join the primary client's in one order."""
        created = self.driver.session_created(self.connection)
        text = created.text if isinstance(created, Forward) else created.to_json()

        async def deliver(raw: str | bytes) -> None:
            await self.inbox.put(_Frame(raw))

        await self.sidebands.serve(transport, text, deliver, lambda: self.ended is not None)

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        return self._tg.create_task(work, name=f"{self.id}:{name}")  # type: ignore[arg-type]

    def _response_started(self) -> None:
        if self.observer is not None:
            self._observe(self.observer.before_response(), False)

    def _touch(self) -> None:
        self._last_activity = max(self._last_activity, self.clock.monotonic())

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
                self.sidebands.mirror(text)
                await self.transport.send(text)
        except TransportStalled as exc:
            self._too_slow(str(exc))
        except TransportClosed:
            self.end("client_closed")
        finally:
            self.sidebands.mirror(None)

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
            if self.driver.busy:
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
        self.mcp.close()
        self.driver.close()
        if self.tools is not None:
            self.tools.close()
        # A response cut short by the close still owes the client its response.done; its
        # audio already queued still goes out (its work is stopped by the close above).
        stopped = self.driver.stop_responses(self.connection, {"type": "cancelled"})
        self._apply([o for o in stopped if not isinstance(o, CancelResponse)])
        if ended.reason == SLOW_CLIENT:
            self.outbox.discard()  # it will never be read: free it now
        if ended.error_code:
            # 1011 (the server failed, e.g. its upstream) is a server error, not the client's.
            kind = "server_error" if ended.close_code == 1011 else "invalid_request_error"
            err = ProtocolError(ended.message, code=ended.error_code, type=kind)
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
