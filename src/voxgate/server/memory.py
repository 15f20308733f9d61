"""Give freed memory back to the system after sessions end.

Measured with bench/memory_burst.py (ten sessions holding ~20 MB each; RSS 186 → 550 MB at
the peak), two things kept the memory after the sessions closed:
- a reference cycle (session → its listener → a method of the session) kept every closed
  session, conversation included, until the next full garbage collection; the listener now
  drops that reference when it closes (tests/test_slow_clients.py checks a closed session is
  freed by reference counting alone);
- then glibc's allocator kept what Python freed in its arenas instead of returning it: RSS
  stayed at ~376 MB with no Python object left alive (tracemalloc: a few hundred KB), and
  ``malloc_trim(0)`` brought it back to ~165 MB, the starting point.
So after sessions end, the server trims: debounced, so a burst of closes costs one trim, and
in a worker thread, since trimming a large heap takes milliseconds. Where libc has no
``malloc_trim`` (musl, macOS) nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


class MemoryTrimmer:
    """``schedule()`` whenever a session ends. The trim runs ``delay_s`` after the last end
    of a burst (each end pushes it back), and at the latest ``max_wait_s`` after the first,
    so a steady stream of ends still gets trimmed now and then."""

    def __init__(self, delay_s: float = 1.0, max_wait_s: float = 10.0) -> None:
        self.delay_s = delay_s
        self.max_wait_s = max_wait_s
        self._trim = _load_trim()
        self._task: asyncio.Task[None] | None = None
        self._due = 0.0
        self.trims = 0

    def schedule(self) -> None:
        if self._trim is None:
            return
        self._due = time.monotonic() + self.delay_s
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="memory-trim")

    async def _run(self) -> None:
        latest = time.monotonic() + self.max_wait_s
        # A deadline that moves while waiting: re-read it after each sleep.
        for _ in range(1000):
            wait = min(self._due, latest) - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        assert self._trim is not None
        await asyncio.to_thread(self._trim, 0)
        self.trims += 1
        log.debug("returned freed memory to the system")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
