"""Outbound RTP pacing: one schedule of 20 ms ticks that sends every call's next packet.

- `PacerSchedule` (sans-IO): the ticks, who is paced, and which frame index each member is due
  to send; `run_due(now)` asks every member for the frames due by ``now``. A member's frame
  index counts ticks since it joined, so its timestamps follow the clock. A stall longer than
  `MAX_LATE_S` is skipped over (the indices jump) rather than made up by a burst.
- `ThreadPacer`: the process-wide driver for real time (`shared_pacer`). One thread for every
  call in the process, started when the first call joins and gone when the last one leaves.
- `LoopPacer`: the same schedule on an injected `Clock` from a task on the event loop, for
  virtual time in tests.

Why a thread: the event loop also runs speech-to-text and synthesis glue for every session; a
packet due while a callback runs waits for it, and at a dozen calls that wait was 12 ms p99
with gaps of 44 ms, past what a phone's jitter buffer absorbs. A thread wakes on its own
monotonic schedule and needs the interpreter only for the microseconds it takes to frame and
send, whatever the loop is doing. It reads `time.monotonic` directly because the session's
`Clock` can only wake coroutines on the loop, which is the dependency being removed.

A thread that wakes while another runs Python waits for the interpreter up to the switch
interval, 5 ms by default: the whole jitter budget of a phone call. So the pacer lowers the
process's switch interval to `SWITCH_INTERVAL_S` when it starts (never raises it; it costs
only when threads contend, and a waiting pacer gets its turn within about 1 ms).

On Linux the thread also asks for a better scheduling priority (nice `PACER_NICE`): at a
dozen calls the process's own speech-to-text and synthesis threads keep every core busy, and
the pacer, awake for microseconds every 20 ms, should not queue behind them. Where the process
may not raise a priority (no CAP_SYS_NICE) it runs at the process's own, logged once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from typing import Protocol

from ..session.clock import Clock
from ..session.playout import MAX_LATE_S

log = logging.getLogger(__name__)

FRAME_S = 0.02
SWITCH_INTERVAL_S = 0.001
PACER_NICE = -10


class PacedSender(Protocol):
    """A call the pacer sends for: `send_frame` frames and sends packet ``index`` (ticks
    since it joined). It runs on the pacer's thread and must not block."""

    def send_frame(self, index: int) -> None: ...


class PacerSchedule:
    """Ticks ``frame_s`` apart from the first `run_due`; no clock, no threads."""

    def __init__(self, frame_s: float = FRAME_S, max_late_s: float = MAX_LATE_S) -> None:
        self.frame_s = frame_s
        self.max_late_s = max_late_s
        self._start: float | None = None
        self._tick = 0  # the next tick to run
        self._members: dict[PacedSender, int | None] = {}  # -> the tick of its frame 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, sender: PacedSender) -> None:
        """``sender``'s frame 0 goes out at the next tick."""
        self._members.setdefault(sender, None)

    def remove(self, sender: PacedSender) -> None:
        self._members.pop(sender, None)
        if not self._members:
            self._start, self._tick = None, 0  # the next member starts a fresh grid

    def next_due(self) -> float | None:
        """When the next tick is due (None: due at once, the grid has not started)."""
        return None if self._start is None else self._start + self._tick * self.frame_s

    def run_due(self, now: float) -> None:
        """Send every frame due by ``now``, tick by tick, each tick in joining order. A
        sender that raises is dropped (logged) so it cannot stop the others."""
        if self._start is None:
            self._start = now
        late = now - (self._start + self._tick * self.frame_s)
        if late > self.max_late_s:
            self._tick = int((now - self._start) / self.frame_s)
        while self._members and self._start + self._tick * self.frame_s <= now:
            for sender, first in list(self._members.items()):
                if first is None:
                    self._members[sender] = first = self._tick
                try:
                    sender.send_frame(self._tick - first)
                except Exception:
                    log.exception("RTP sender %r failed; it is no longer paced", sender)
                    self.remove(sender)
            self._tick += 1


class Pacer(Protocol):
    """What an `RtpStream` joins to have its packets sent."""

    def add(self, sender: PacedSender) -> None: ...

    def remove(self, sender: PacedSender) -> None:
        """After this returns the sender's `send_frame` is not running and never runs
        again, so its socket may be closed."""
        ...


class ThreadPacer:
    """A `PacerSchedule` on real time, driven by one thread (see the module docstring)."""

    def __init__(self, frame_s: float = FRAME_S) -> None:
        self._schedule = PacerSchedule(frame_s)
        # Held while frames are sent, so `remove` waits for a send in progress.
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The running thread, if any (None once the last sender has left)."""
        return self._thread

    def add(self, sender: PacedSender) -> None:
        with self._cond:
            self._schedule.add(sender)
            if self._thread is None:
                if sys.getswitchinterval() > SWITCH_INTERVAL_S:
                    sys.setswitchinterval(SWITCH_INTERVAL_S)
                self._thread = threading.Thread(target=self._run, name="rtp-pacer", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, sender: PacedSender) -> None:
        with self._cond:
            self._schedule.remove(sender)
            self._cond.notify()  # the last one gone: the thread ends now, not at its tick

    def _run(self) -> None:
        _prefer_this_thread()
        with self._cond:
            while len(self._schedule):
                due = self._schedule.next_due()
                now = time.monotonic()
                if due is not None and due > now:
                    self._cond.wait(due - now)  # releases the lock while waiting
                    continue
                self._schedule.run_due(now)
            # Ended under the lock: an `add` that follows starts a new thread.
            self._thread = None


_priority_noted = False


def _prefer_this_thread() -> None:
    """Give the calling thread nice `PACER_NICE` (Linux, where permitted; never worse)."""
    global _priority_noted
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid), PACER_NICE))
    except OSError as exc:
        if not _priority_noted:
            _priority_noted = True
            log.info(
                "RTP pacer runs at the process's priority (%s); grant CAP_SYS_NICE to "
                "let it go first",
                exc.strerror,
            )


class LoopPacer:
    """A `PacerSchedule` on an injected `Clock`, from one named task on the running loop
    (virtual time in tests). `close` cancels it."""

    def __init__(self, clock: Clock, frame_s: float = FRAME_S) -> None:
        self.clock = clock
        self._schedule = PacerSchedule(frame_s)
        self._joined = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="rtp-pacer")

    def add(self, sender: PacedSender) -> None:
        self._schedule.add(sender)
        self._joined.set()

    def remove(self, sender: PacedSender) -> None:
        self._schedule.remove(sender)  # on the loop: no send can be in progress

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not len(self._schedule):
                self._joined.clear()
                await self._joined.wait()
            due = self._schedule.next_due()
            now = self.clock.monotonic()
            if due is not None and due > now:
                await self.clock.sleep(due - now)
                continue
            self._schedule.run_due(now)


_shared: ThreadPacer | None = None
_shared_lock = threading.Lock()


def shared_pacer() -> ThreadPacer:
    """The process's one real-time pacer."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadPacer()
        return _shared
