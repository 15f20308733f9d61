"""The session's outbound queue: a control lane ahead of a media lane.

Policy (DESIGN.md "every buffer is bounded, with a written policy"):
- control events (everything but audio deltas) are never dropped and jump ahead of queued
  audio — except that an event of a response never overtakes that response's own audio, so
  the order of one response's events is exactly what the protocol prescribes;
- the media lane is bounded by a high-water mark: producers wait in `media_space` before
  adding audio (TTS ahead of the socket waits, it does not grow memory);
- when a response is cancelled its queued audio is dropped (`purge`): nobody will hear it;
- a control event may be *held* until a future completes (``response.done`` waits until its
  usage is recorded): it and every control event behind it wait, in order, while audio
  keeps flowing — except audio of a response whose own earlier control events are among
  those waiting (a response's events keep their order);
- both lanes together are measured in characters of JSON (`queued_chars`, ≈ bytes: events are
  ASCII but for text the model or user wrote). The session disconnects a client whose backlog
  passes its limit (`SessionLimits.max_outbox_bytes`) and then `discard`s the backlog: a
  client that stops reading can hold at most that much memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class Envelope:
    seq: int
    text: str
    response_id: str | None
    hold: asyncio.Future[None] | None = None


class Outbox:
    def __init__(self, media_high_water: int = 64) -> None:
        self._control: deque[Envelope] = deque()
        self._media: deque[Envelope] = deque()
        self._seq = 0
        self._high_water = media_high_water
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closed = False
        self.queued_chars = 0

    def put_control(
        self, text: str, response_id: str | None = None, hold: asyncio.Future[None] | None = None
    ) -> None:
        env = self._wrap(text, response_id)
        if hold is not None and not hold.done():
            env.hold = hold
            hold.add_done_callback(lambda _: self._ready.set())
        self._control.append(env)
        self._ready.set()

    def put_media(self, text: str, response_id: str) -> None:
        self._media.append(self._wrap(text, response_id))
        if len(self._media) >= self._high_water:
            self._space.clear()
        self._ready.set()

    def _wrap(self, text: str, response_id: str | None) -> Envelope:
        self._seq += 1
        self.queued_chars += len(text)
        return Envelope(self._seq, text, response_id)

    async def media_space(self) -> None:
        """Wait until the media lane is below its high-water mark."""
        await self._space.wait()

    def purge(self, response_id: str) -> int:
        """Drop the queued audio of a response; returns how many events were dropped."""
        kept = deque(e for e in self._media if e.response_id != response_id)
        dropped = len(self._media) - len(kept)
        self.queued_chars -= sum(len(e.text) for e in self._media if e.response_id == response_id)
        self._media = kept
        self._update_space()
        return dropped

    def discard(self) -> None:
        """Drop everything queued (a client too slow to read it)."""
        self._control.clear()
        self._media.clear()
        self.queued_chars = 0
        self._update_space()

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._space.set()

    def __len__(self) -> int:
        return len(self._control) + len(self._media)

    async def get(self) -> str | None:
        """The next message to send, or None once closed and drained."""
        while (env := self._pop()) is None:
            if self._closed and not self._control:
                return None
            self._ready.clear()
            await self._ready.wait()
        self.queued_chars -= len(env.text)
        return env.text

    def _pop(self) -> Envelope | None:
        head = self._control[0] if self._control else None
        held = head is not None and head.hold is not None and not head.hold.done()
        if head is not None and not held and not self._must_wait(head):
            return self._control.popleft()
        if not self._media or self._behind_control(self._media[0]):
            return None
        env = self._media.popleft()
        self._update_space()
        return env

    def _behind_control(self, media: Envelope) -> bool:
        """Audio never overtakes its own response's earlier control events (they may be
        waiting behind a held one)."""
        return any(c.seq < media.seq and c.response_id == media.response_id for c in self._control)

    def _must_wait(self, head: Envelope) -> bool:
        """A response's control event waits for that response's earlier audio."""
        if head.response_id is None:
            return False
        return any(m.seq < head.seq and m.response_id == head.response_id for m in self._media)

    def _update_space(self) -> None:
        if len(self._media) < self._high_water:
            self._space.set()
