"""The user's audio sent at the pace of a live microphone."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from ..session.clock import Clock
from .options import BYTES_PER_SECOND, WIRE_RATE

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Microphone:
    """Sends audio no faster than real time: each chunk leaves when the clock reaches the
    end of the audio it carries, as from a microphone that has just recorded it."""

    def __init__(self, send: Send, clock: Clock, chunk_ms: int) -> None:
        self.send = send
        self._clock = clock
        self._chunk_bytes = 2 * WIRE_RATE * chunk_ms // 1000
        self._start: float | None = None
        self._sent_s = 0.0

    async def play(self, pcm: bytes) -> None:
        if self._start is None:
            self._start = self._clock.monotonic()
        for offset in range(0, len(pcm), self._chunk_bytes):
            chunk = pcm[offset : offset + self._chunk_bytes]
            self._sent_s += len(chunk) / BYTES_PER_SECOND
            # The schedule is fixed from the start, so a late wake-up is caught up, not added.
            await self._clock.sleep(self._start + self._sent_s - self._clock.monotonic())
            audio = base64.b64encode(chunk).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})

    async def silence_forever(self) -> None:
        silence = bytes(self._chunk_bytes)
        while True:
            await self.play(silence)
