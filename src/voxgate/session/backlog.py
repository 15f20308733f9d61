"""A sideband client's queue of server events, bounded in events and in characters.

Policy: the session never waits for a sideband (it would hold up the primary client);
`put_nowait` raises `asyncio.QueueFull` once either bound would be passed, and the session
then disconnects that sideband. The end marker (None) always fits.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Backlog:
    def __init__(self, max_events: int, max_chars: int) -> None:
        self.max_events = max_events
        self.max_chars = max_chars
        self.chars = 0
        self._items: deque[str | None] = deque()
        self._ready = asyncio.Event()

    def put_nowait(self, text: str | None) -> None:
        if text is not None and (
            len(self._items) >= self.max_events or self.chars + len(text) > self.max_chars
        ):
            raise asyncio.QueueFull
        self._items.append(text)
        self.chars += len(text or "")
        self._ready.set()

    def get_nowait(self) -> str | None:
        text = self._items.popleft()
        self.chars -= len(text or "")
        return text

    def clear(self) -> None:
        self._items.clear()
        self.chars = 0

    async def get(self) -> str | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self.get_nowait()
