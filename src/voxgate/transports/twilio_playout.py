"""Reply audio on a Twilio media stream: a `Playout` over the playout core where "played"
is what Twilio says it played, not what was sent.

Twilio buffers the audio it is sent and plays it to the caller at its own pace; the only word
back is the echo of a ``mark`` once the audio sent before that mark has played. So:
- audio goes out as 20 ms μ-law ``media`` frames, paced from the clock at most `LEAD_S` ahead
  of where Twilio's buffer is estimated to run dry (enough to ride out network jitter, little
  enough that a barge-in has little to throw away);
- a ``mark`` follows every `MARK_EVERY_FRAMES` frames of a response and its last frame; each
  mark records how much of its item had been sent when it was sent;
- an echoed mark moves the item's *heard* position to the mark's; the echo of a response's
  last mark means the response has fully played (``output_audio_buffer.stopped``);
- ``clear`` (barge-in, or a client's ``output_audio_buffer.clear``) drops what is queued here,
  sends Twilio a ``clear`` (which empties its buffer), and cuts the item at the last mark
  Twilio echoed: what the caller heard. Twilio echoes the marks of cleared audio too; those
  echoes are ignored, since that audio never played.

The sender is the only task that writes to the socket (``send`` is awaited one message at a
time, the control messages ahead of media).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..audio import PCMU, AudioFormat
from ..session.clock import Clock
from ..session.playout import PlayoutCore
from ..session.transport import PlayoutCut
from .twilio_messages import clear_message, mark_message, media_message

log = logging.getLogger(__name__)

FRAME_S = 0.02
FRAME_SAMPLES = int(PCMU.rate * FRAME_S)  # 160 bytes of μ-law
# How far ahead of Twilio's playback audio is sent.
LEAD_S = 0.2
# A mark every 100 ms of audio: a barge-in truncates within 100 ms of what was heard.
MARK_EVERY_FRAMES = 5
# Reply audio queued here at most; a response that would queue more waits (`room`).
MAX_QUEUED_S = 60.0

Send = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Mark:
    response_id: str
    item_id: str
    content_index: int
    sent_ms: int  # how much of the item had been sent when the mark was
    last: bool  # the response's last mark: its echo means the response has played


@dataclass(slots=True)
class _Reply:
    item_id: str
    content_index: int
    heard_ms: int = 0
    sent_any: bool = False


class TwilioPlayout:
    """The session's `Playout` on a Twilio media stream (see the module's docstring)."""

    format: AudioFormat = PCMU

    def __init__(
        self,
        stream_sid: str,
        send: Send,
        clock: Clock,
        *,
        lead_s: float = LEAD_S,
        max_queued_s: float = MAX_QUEUED_S,
    ) -> None:
        self.stream_sid = stream_sid
        self._send = send
        self.clock = clock
        self.lead_s = lead_s
        self.max_queued_s = max_queued_s
        self.core = PlayoutCore(PCMU, on_stopped=self._all_sent)
        # Responses with audio queued here or unheard at Twilio, oldest first.
        self._replies: dict[str, _Reply] = {}
        self._marks: dict[str, _Mark] = {}  # sent, not yet echoed, by name
        self._mark_seq = 0
        self._frames_since_mark: dict[str, int] = {}
        self._finished: list[str] = []  # responses whose last frame was just taken
        self._ended: set[str] = set()  # responses that will queue no more audio
        self._control: deque[str] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        # When Twilio's buffer runs dry, on our clock (an estimate: playback starts on arrival).
        self._horizon = 0.0
        self._stopped: Callable[[str], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._listener: Callable[[bytes], None] | None = None

    # -- Playout --------------------------------------------------------------------------

    def bind(self, stopped: Callable[[str], Awaitable[None]]) -> None:
        self._stopped = stopped

    def play(self, response_id: str, item_id: str, content_index: int, audio: bytes) -> None:
        if self._closed or not audio:
            return
        self._replies.setdefault(response_id, _Reply(item_id, content_index))
        self.core.play(response_id, item_id, content_index, audio)
        self._wake.set()

    def end(self, response_id: str) -> None:
        if response_id not in self._replies:
            return  # it played nothing (or was cleared): nothing to finish
        self._ended.add(response_id)
        self.core.end(response_id)
        self._wake.set()

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        target = response_id if response_id is not None else next(iter(self._replies), None)
        reply = self._replies.pop(target, None) if target is not None else None
        if target is None or reply is None:
            return None
        self.core.clear(target)
        self._ended.discard(target)
        self._frames_since_mark.pop(target, None)
        if reply.sent_any:
            # Twilio empties its buffer and echoes the marks in it: none of that was heard.
            self._control.append(clear_message(self.stream_sid))
            self._marks = {n: m for n, m in self._marks.items() if m.response_id != target}
            self._horizon = self.clock.monotonic()
            self._wake.set()
        self._room.set()
        return PlayoutCut(target, reply.item_id, reply.content_index, reply.heard_ms)

    def tap(self, listener: Callable[[bytes], None]) -> None:
        """``listener`` hears each frame as it goes to Twilio (the call's recording: at most
        `LEAD_S` ahead of the caller's ear)."""
        self._listener = listener

    def full(self) -> bool:
        """``max_queued_s`` or more of audio is queued here (`room` would wait)."""
        return not self._closed and self.core.queued_s >= self.max_queued_s

    async def room(self) -> None:
        """Wait until less than ``max_queued_s`` of audio is queued here."""
        while self.full():
            self._room.clear()
            await self._room.wait()

    # -- Twilio's side --------------------------------------------------------------------

    def acknowledged(self, name: str) -> None:
        """Twilio echoed a mark: the audio sent before it has played."""
        mark = self._marks.pop(name, None)
        if mark is None:  # cleared audio, or not one of ours
            return
        reply = self._replies.get(mark.response_id)
        if reply is None:
            return
        reply.heard_ms = max(reply.heard_ms, mark.sent_ms)
        if mark.last:
            del self._replies[mark.response_id]
            self._report(mark.response_id)

    async def run(self) -> None:
        """Send queued audio, marks and clears until `close`."""
        while not self._closed:
            while self._control:
                await self._send(self._control.popleft())
            if self._finished:  # ended after its audio was all sent: its last mark now
                await self._send_marks([])
                continue
            if not self._frame_ready():
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self.clock.monotonic()
            self._horizon = max(self._horizon, now)
            if self._horizon - now >= self.lead_s - 1e-6:  # (sums of 0.02 s drift)
                self._wake.clear()
                await self._sleep_or_wake(self._horizon - now - self.lead_s + FRAME_S / 2)
                continue
            await self._send_frame()

    def close(self) -> None:
        """The call ended: drop what is queued, release responses waiting for room."""
        self._closed = True
        self.core.drop_all()
        self._replies.clear()
        self._marks.clear()
        self._ended.clear()
        self._wake.set()
        self._room.set()
        for task in list(self._tasks):
            task.cancel()

    # -- internals ------------------------------------------------------------------------

    def _frame_ready(self) -> bool:
        """A whole frame is queued, or the rest of a response that will queue no more: a
        response's frames are never padded with silence while it is still being made, so
        the audio sent before a mark is exactly the item's first ``sent_ms``."""
        queued = round(self.core.queued_s * PCMU.rate)
        if queued >= FRAME_SAMPLES:
            return True
        return queued > 0 and self.core.playing in self._ended

    async def _send_frame(self) -> None:
        head = self.core.playing
        audio = self.core.take(FRAME_SAMPLES)  # may finish responses (`_all_sent`)
        self._horizon += FRAME_S
        if self.core.queued_s < self.max_queued_s:
            self._room.set()
        marks: list[str] = []
        if head is not None and (reply := self._replies.get(head)) is not None:
            reply.sent_any = True
            count = self._frames_since_mark.get(head, 0) + 1
            self._frames_since_mark[head] = count
            if count >= MARK_EVERY_FRAMES and head not in self._finished:
                marks.append(self._mark(head, last=False))
        if head is not None:
            if self._listener is not None:
                self._listener(audio)
            await self._send(media_message(self.stream_sid, audio))
        await self._send_marks(marks)

    async def _send_marks(self, marks: list[str]) -> None:
        """``marks``, then the last mark of each response whose audio has all been sent."""
        marks += [self._mark(rid, last=True) for rid in self._finished if rid in self._replies]
        self._ended.difference_update(self._finished)
        self._finished.clear()
        for text in marks:
            await self._send(text)

    def _mark(self, response_id: str, *, last: bool) -> str:
        reply = self._replies[response_id]
        self._frames_since_mark[response_id] = 0
        if last:
            self._frames_since_mark.pop(response_id, None)
        self._mark_seq += 1
        name = f"voxgate-{self._mark_seq}"
        sent_ms = self.core.played_ms(reply.item_id)
        self._marks[name] = _Mark(response_id, reply.item_id, reply.content_index, sent_ms, last)
        return mark_message(self.stream_sid, name)

    def _all_sent(self, response_id: str) -> None:
        """The core's word that a response's last audio was taken (sent, not yet heard)."""
        self._finished.append(response_id)

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _report(self, response_id: str) -> None:
        if self._stopped is None or self._closed:
            return
        task = asyncio.ensure_future(self._stopped(response_id))
        task.set_name(f"twilio-stopped:{response_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
