"""Server-side playout, written once for every transport that plays reply audio itself
(WebRTC, RTP for SIP, Twilio Media Streams).

Three parts:
- `PlayoutCore` (sans-IO): the queue of reply audio in the playout's declared format, how
  many samples of each item have been taken (= heard), end/clear into a `PlayoutCut`, and
  which responses have finished playing. A framer pulls fixed-size frames from it with
  `take(n_samples)`; silence fills whatever the queue cannot.
- `FramePacer`: when the next frame is due, on the injected `Clock` (virtual time in tests).
- `ServerPlayout`: the `Playout` a session binds, over a core: it reports finished responses
  to the session and bounds the queue (`room`, awaited before a response queues more audio).
  Its framer may run on another thread (RTP's pacer): the core is locked, and what a frame
  sets off is posted back to the event loop.

The format is declared (`PlayoutFormat`) so a phone leg takes 8 kHz G.711 straight from the
session's converter instead of through a 24 kHz hop.

Bound: a playout queues at most ``max_queued_s`` of audio (`MAX_QUEUED_S` by default). A
response that would queue more waits in `ServerPlayout.room` until playout catches up:
generation blocks, nothing is dropped. `play` itself never refuses audio, so a bound crossed
by one chunk overshoots by at most that chunk. A relayed session's upstream cannot be made
to wait that way: the relay checks `full` and plays no more of a reply past the bound
(``session/relay_playout.py``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..audio import PCM16, PCMA, PCMU, AudioFormat
from .clock import Clock
from .transport import PlayoutCut

log = logging.getLogger(__name__)

# A playout's audio format: an `AudioFormat` whose rate may differ from the wire defaults
# (PCM16 at 8 kHz for a phone leg that is not G.711).
PlayoutFormat = AudioFormat
PCM16_24K: PlayoutFormat = PCM16
PCM16_8K: PlayoutFormat = AudioFormat("audio/pcm", 8000, 2)
G711_ULAW: PlayoutFormat = PCMU
G711_ALAW: PlayoutFormat = PCMA

MAX_QUEUED_S = 60.0
# A clock stall longer than this is skipped over rather than sent as a burst of late frames.
MAX_LATE_S = 0.2

# The byte that decodes to (near) zero in each format: what fills a frame with no audio.
_SILENCE = {"audio/pcm": 0x00, "audio/pcmu": 0xFF, "audio/pcma": 0xD5}


def silence(fmt: PlayoutFormat, n_samples: int) -> bytes:
    return bytes([_SILENCE[fmt.type]]) * (n_samples * fmt.bytes_per_sample)


@dataclass(slots=True)
class _Chunk:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes
    offset: int = 0  # bytes already taken


class PlayoutCore:
    """Queued reply audio and what of it was heard. No I/O: ``on_stopped(response_id)`` is
    called (synchronously) when a response that was `end`-ed has fully played."""

    def __init__(
        self,
        fmt: PlayoutFormat = PCM16_24K,
        *,
        on_stopped: Callable[[str], None] = lambda rid: None,
    ) -> None:
        self.format = fmt
        self.on_stopped = on_stopped
        self._queue: deque[_Chunk] = deque()
        self._queued_bytes = 0
        # Responses whose audio started and has neither stopped nor been cleared, with the
        # item and part that is playing; samples taken per item; responses that will queue
        # no more audio.
        self._active: dict[str, tuple[str, int]] = {}
        self._played: dict[str, int] = {}
        self._ended: set[str] = set()

    @property
    def queued_s(self) -> float:
        """Seconds of audio queued and not yet taken."""
        return self._queued_bytes / (self.format.rate * self.format.bytes_per_sample)

    @property
    def playing(self) -> str | None:
        """The response whose audio is at the head of the queue, if any."""
        return self._queue[0].response_id if self._queue else None

    def played_ms(self, item_id: str) -> int:
        """How much of an item's audio has been taken so far."""
        return self._played.get(item_id, 0) * 1000 // self.format.rate

    def play(self, response_id: str, item_id: str, content_index: int, audio: bytes) -> None:
        """Queue audio (in `format`) of a response behind what is queued."""
        if not audio:
            return
        self._active.setdefault(response_id, (item_id, content_index))
        self._queue.append(_Chunk(response_id, item_id, content_index, audio))
        self._queued_bytes += len(audio)

    def end(self, response_id: str) -> None:
        """The response will queue no more audio."""
        self._ended.add(response_id)
        if not any(c.response_id == response_id for c in self._queue):
            self._finish(response_id)

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        """Drop the queued audio of ``response_id`` (None: whatever the user hears now: the
        head of the queue, else the latest reply); where it was cut, or None if nothing of it
        was playing."""
        target = response_id
        if target is None:
            target = self.playing or next(reversed(self._active), None)
        if target is None or target not in self._active:
            return None
        item_id, content_index = self._active.pop(target)
        self._ended.discard(target)
        kept = deque(c for c in self._queue if c.response_id != target)
        self._queued_bytes = sum(len(c.audio) - c.offset for c in kept)
        self._queue = kept
        played_ms = self._played.pop(item_id, 0) * 1000 // self.format.rate
        return PlayoutCut(target, item_id, content_index, played_ms)

    def drop_all(self) -> None:
        """Forget everything queued (the call ended); nothing is reported."""
        self._queue.clear()
        self._queued_bytes = 0
        self._active.clear()
        self._ended.clear()

    def take(self, n_samples: int) -> bytes:
        """The next ``n_samples`` of audio: queued audio first, silence for the rest."""
        width = self.format.bytes_per_sample
        size = n_samples * width
        out = bytearray()
        while self._queue and len(out) < size:
            chunk = self._queue[0]
            piece = chunk.audio[chunk.offset : chunk.offset + size - len(out)]
            out += piece
            chunk.offset += len(piece)
            self._queued_bytes -= len(piece)
            self._active[chunk.response_id] = (chunk.item_id, chunk.content_index)
            self._played[chunk.item_id] = self._played.get(chunk.item_id, 0) + len(piece) // width
            if chunk.offset >= len(chunk.audio):
                self._queue.popleft()
                rid = chunk.response_id
                if rid in self._ended and not any(c.response_id == rid for c in self._queue):
                    self._finish(rid)
        if len(out) < size:
            out += silence(self.format, (size - len(out)) // width)
        return bytes(out)

    def _finish(self, response_id: str) -> None:
        self._ended.discard(response_id)
        if self._active.pop(response_id, None) is not None:
            self.on_stopped(response_id)


class FramePacer:
    """Frame ``n`` is due ``n * frame_s`` after the first, on ``clock``. A stall of more than
    `MAX_LATE_S` is skipped over (the frame count jumps, so timestamps stay true to time)
    instead of being made up by a burst of late frames."""

    def __init__(self, clock: Clock, frame_s: float) -> None:
        self.clock = clock
        self.frame_s = frame_s
        self.frames = 0  # the index of the next frame
        self._start: float | None = None

    async def next_frame(self) -> int:
        """Wait until the next frame is due; its index (frames since the first)."""
        now = self.clock.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self.frames * self.frame_s
            if due > now:
                await self.clock.sleep(due - now)
            elif now - due > MAX_LATE_S:
                self.frames = int((now - self._start) / self.frame_s)
        index = self.frames
        self.frames += 1
        return index


class ServerPlayout:
    """A session's `Playout` over a `PlayoutCore`, for a framer that pulls audio with `take`
    on its own clock. Finished responses are reported to the session from named tasks this
    object owns; `room` is the queue's bound.

    The framer may run on another thread (RTP's pacer): the core is then guarded by a lock,
    and what a `take` sets off on the event loop (finished responses, room, the tap) is
    handed to ``post``, e.g. ``loop.call_soon_threadsafe``. Without ``post`` it runs at once,
    for a framer on the loop."""

    def __init__(
        self,
        fmt: PlayoutFormat = PCM16_24K,
        *,
        max_queued_s: float = MAX_QUEUED_S,
        post: Callable[[Callable[[], None]], object] | None = None,
    ):
        # Responses the core finished during the current locked call, reported after it.
        self._finished: list[str] = []
        self.core = PlayoutCore(fmt, on_stopped=self._note_finished)
        self.format = fmt
        self.max_queued_s = max_queued_s
        self._post = post
        self._lock = threading.Lock()
        self._stopped: Callable[[str], Awaitable[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        self._closed = False
        self._listener: Callable[[bytes], None] | None = None

    @property
    def queued_s(self) -> float:
        with self._lock:
            return self.core.queued_s

    # -- Playout --------------------------------------------------------------------------

    def bind(self, stopped: Callable[[str], Awaitable[None]]) -> None:
        self._stopped = stopped

    def play(self, response_id: str, item_id: str, content_index: int, audio: bytes) -> None:
        if not self._closed:
            with self._lock:
                self.core.play(response_id, item_id, content_index, audio)

    def end(self, response_id: str) -> None:
        with self._lock:
            self.core.end(response_id)
            finished = self._take_finished()
        self._report(finished)

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        with self._lock:
            cut = self.core.clear(response_id)
        self._wake()
        return cut

    def reformat(self, fmt: PlayoutFormat) -> None:
        """Play ``fmt`` from now on: an outbound phone call's codec is known only once the
        callee answers, after its session was admitted. Only while nothing is queued."""
        if self.core.queued_s > 0 or self.core.playing is not None:
            raise RuntimeError(f"cannot switch the playout to {fmt.type} with audio queued")
        self.format = fmt
        self.core.format = fmt

    def tap(self, listener: Callable[[bytes], None]) -> None:
        """``listener`` hears every frame taken, silence included (the call's recording);
        it is called on the event loop."""
        self._listener = listener

    def full(self) -> bool:
        """The queue holds ``max_queued_s`` or more (`room` would wait)."""
        return not self._closed and self.queued_s >= self.max_queued_s

    async def room(self) -> None:
        """Wait until the queue holds less than ``max_queued_s`` (at once after `close`)."""
        while self.full():
            self._drained.clear()
            await self._drained.wait()

    # -- framer side ----------------------------------------------------------------------

    def take(self, n_samples: int) -> bytes:
        """The next frame; counted as heard from now on. Safe on any thread."""
        with self._lock:
            audio = self.core.take(n_samples)
            finished = self._take_finished()
            room = self.core.queued_s < self.max_queued_s
        # Only what someone waits for crosses to the loop: most frames post nothing.
        waiting = room and not self._drained.is_set()
        if finished or waiting or self._listener is not None:
            then = functools.partial(self._after_take, audio, finished, waiting)
            if self._post is None:
                then()
            else:
                self._post(then)
        return audio

    def close(self) -> None:
        """The call ended: drop the queue, release any response waiting for room."""
        self._closed = True
        with self._lock:
            self.core.drop_all()
            self._finished.clear()
        self._drained.set()
        for task in list(self._tasks):
            task.cancel()

    def _after_take(self, audio: bytes, finished: list[str], room: bool) -> None:
        self._report(finished)
        if room:
            self._drained.set()
        if self._listener is not None and not self._closed:
            self._listener(audio)

    def _note_finished(self, response_id: str) -> None:
        self._finished.append(response_id)

    def _take_finished(self) -> list[str]:
        finished, self._finished = self._finished, []
        return finished

    def _wake(self) -> None:
        if self.queued_s < self.max_queued_s:
            self._drained.set()

    def _report(self, finished: list[str]) -> None:
        if self._stopped is None or self._closed:
            return
        for response_id in finished:
            task = asyncio.ensure_future(self._stopped(response_id))
            task.set_name(f"playout-stopped:{response_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class PlayoutFront:
    """The session's `Playout` side of a framer that holds a `ServerPlayout` as ``playout``
    (the WebRTC track, an RTP stream): every call goes straight to it."""

    playout: ServerPlayout

    @property
    def format(self) -> PlayoutFormat:
        return self.playout.format

    def bind(self, stopped: Callable[[str], Awaitable[None]]) -> None:
        self.playout.bind(stopped)

    def play(self, response_id: str, item_id: str, content_index: int, audio: bytes) -> None:
        self.playout.play(response_id, item_id, content_index, audio)

    def end(self, response_id: str) -> None:
        self.playout.end(response_id)

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        return self.playout.clear(response_id)

    def full(self) -> bool:
        return self.playout.full()

    async def room(self) -> None:
        await self.playout.room()

    def tap(self, listener: Callable[[bytes], None]) -> None:
        self.playout.tap(listener)
