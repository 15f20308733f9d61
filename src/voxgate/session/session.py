"""One live conversation: a task group around the sans-IO connection.

Tasks (all owned by the session's TaskGroup, all named):
- reader: transport frames → inbox (pauses when the inbox is full);
- writer: outbox → transport (control lane ahead of media);
- watchdog: maximum duration and idle timeout, as sleeps until the next deadline;
- one task per running response (see `response.py`).
The main loop is the only code that touches the connection. Close is idempotent, ordered
(stop input, stop responses, flush what is queued, say why, close) and time-bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import assert_never

from ..protocol import events as ev
from ..protocol.commands import (
    CancelResponse,
    ClearOutputAudio,
    InputAudio,
    StartResponse,
    TranscribeItem,
)
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.errors import ProtocolError
from .clock import Clock, SystemClock
from .engines import EngineSet
from .inbox import Ended, Inbox
from .listener import Listener
from .outbox import Outbox
from .response import Progress, ResponseRunner
from .transport import Transport, TransportClosed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_duration_s: float = 3600.0
    # No client event and no response running for this long ends the session; None = never.
    idle_timeout_s: float | None = 600.0
    inbox_capacity: int = 256
    # How far reply audio may run ahead of real time; None sends it as fast as it is made.
    audio_lead_s: float | None = None
    close_timeout_s: float = 5.0


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
    ) -> None:
        self.connection = connection
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
        self.listener = Listener(engines, self.inbox.put, self._spawn)
        connection.expires_at = int(self.clock.wall() + limits.max_duration_s)

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
            self._apply(outputs)

    # -- outputs --------------------------------------------------------------------------

    def _apply(self, outputs: list[Output]) -> None:
        for out in outputs:
            match out:
                case ev.ServerEvent():
                    self._send(out)
                case StartResponse(plan=plan):
                    runner = ResponseRunner(
                        plan,
                        self.engines,
                        self.inbox.put,
                        self.outbox.media_space,
                        before=self.listener.ready(plan.context),
                        lead_s=self.limits.audio_lead_s,
                        clock=self.clock,
                    )
                    self._start_response(plan.response_id, runner)
                case CancelResponse(response_id=rid):
                    self._cancel_response(rid)
                case InputAudio(data=data, format=fmt):
                    self._apply(self.listener.audio(self.connection, data, fmt))
                case TranscribeItem(item_id=item_id, audio=audio, format=fmt):
                    self._apply(self.listener.transcribe(self.connection, item_id, audio, fmt))
                case ClearOutputAudio():
                    pass  # server-side playout only (WebRTC/SIP)
                case _:
                    assert_never(out)

    def _send(self, event: ev.ServerEvent) -> None:
        text = event.to_json()
        rid = getattr(event, "response_id", None)
        if isinstance(event, ev.ResponseDelta) and event.type == "response.output_audio.delta":
            self.outbox.put_media(text, rid or "")
            return
        if rid is None and isinstance(event, ev.ResponseLifecycle):
            rid = event.response.get("id")
        self.outbox.put_control(text, rid)

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
                await self.transport.send(text)
        except TransportClosed:
            self.end("client_closed")

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
                minutes = limits.max_duration_s / 60
                self.end(
                    "expired",
                    "session_expired",
                    f"Your session hit the maximum duration of {minutes:g} minutes.",
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
                    "session_idle_timeout",
                    f"The session was closed after {limits.idle_timeout_s:g} seconds "
                    "without any client event. Send events (or audio) to keep it open.",
                )
                return

    async def _done_within(self, task: asyncio.Task[None], seconds: float) -> bool:
        """Wait for ``task`` at most ``seconds`` of the session's clock (not the loop's)."""
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
        if ended.error_code:
            err = ProtocolError(ended.message, code=ended.error_code)
            self._send(self.connection.error(err))
        self.outbox.close()
        if not await self._done_within(writer, self.limits.close_timeout_s):
            writer.cancel()
        try:
            await self.transport.close(ended.close_code, ended.reason)
        except Exception:  # the peer may be gone already; closing is best effort
            log.debug("closing transport of %s failed", self.id, exc_info=True)
