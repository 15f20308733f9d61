"""The session's bounded inbox: client frames and engine progress, in arrival order.

Producers wait when it is full (the transport reader pauses, so a fast client is slowed by
TCP instead of growing memory). Ending the session is not queued behind the backlog: `end`
wins over whatever is waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ended:
    reason: str
    # An error event for the client before the close (code, message), if the end is abnormal.
    error_code: str | None = None
    message: str = ""
    close_code: int = 1000


class Inbox(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._ended: Ended | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, item: T) -> None:
        while len(self._items) >= self._capacity and self._ended is None:
            self._writable.clear()
            await self._writable.wait()
        if self._ended is None:
            self._items.append(item)
            self._readable.set()

    def end(self, ended: Ended) -> None:
        """Ask the session to end; the first reason given is the one kept."""
        if self._ended is None:
            self._ended = ended
        self._readable.set()
        self._writable.set()

    async def get(self) -> T | Ended:
        while not self._items and self._ended is None:
            self._readable.clear()
            await self._readable.wait()
        if self._ended is not None:
            return self._ended
        item = self._items.popleft()
        self._writable.set()
        return item
