"""A small jitter buffer for inbound RTP audio, sans-IO.

Packets arrive out of order, late, twice or not at all; the listener reads one packet's worth
of audio per tick of its clock. Rules:
- A stream starts playing once ``depth`` packets are held (the delay that absorbs jitter), and
  starts over the same way after it ran dry (the caller paused or the network stalled).
- Packets play in sequence order. A missing packet whose successor is already held is lost:
  its slot plays as silence (concealment) and is never waited for again.
- A packet that arrives after its slot played, or a second copy of one held, is dropped.
- At most ``max_depth`` packets are held; past that the oldest are played out at once
  (skipped), so a burst never builds latency beyond ``max_depth`` packets.
- A jump of more than ``max_depth`` in sequence numbers (a restarted sender) resynchronises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .rtp_wire import SequenceUnwrapper

DEPTH = 3  # 60 ms of 20 ms packets before playing
MAX_DEPTH = 10  # 200 ms at most


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0  # slots concealed by silence
    late: int = 0
    duplicate: int = 0
    overflow: int = 0  # packets skipped because too many were held
    underruns: int = 0


@dataclass
class JitterBuffer:
    depth: int = DEPTH
    max_depth: int = MAX_DEPTH
    stats: JitterStats = field(default_factory=JitterStats)

    def __post_init__(self) -> None:
        self._held: dict[int, bytes] = {}
        self._next: int | None = None  # the extended sequence number due to play
        self._playing = False
        self._unwrap = SequenceUnwrapper()

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, sequence: int, payload: bytes) -> None:
        """A packet's audio, by its 16-bit sequence number."""
        seq = self._unwrap.extend(sequence)
        self.stats.received += 1
        if self._next is not None and seq < self._next:
            if self._next - seq > 2 * self.max_depth:
                self._resync(seq)  # far behind: the sender restarted its numbering
            else:
                self.stats.late += 1
                return
        if seq in self._held:
            self.stats.duplicate += 1
            return
        if self._next is not None and seq - self._next > 2 * self.max_depth:
            self._resync(seq)
        self._held[seq] = payload
        if self._next is None:
            self._next = seq
        while len(self._held) > self.max_depth:
            self._skip_oldest()

    def pop(self) -> bytes | None:
        """The next slot's audio; None for a slot with none (not started yet, ran dry, or a
        lost packet): the reader conceals it with silence."""
        if not self._playing:
            if len(self._held) < self.depth:
                return None
            self._playing = True
            self._next = min(self._held)
        if not self._held:
            self._playing = False
            self.stats.underruns += 1
            return None
        assert self._next is not None
        payload = self._held.pop(self._next, None)
        self._next += 1
        if payload is None:
            self.stats.lost += 1
        else:
            self.stats.played += 1
        return payload

    def _skip_oldest(self) -> None:
        oldest = min(self._held)
        del self._held[oldest]
        self.stats.overflow += 1
        assert self._next is not None
        self._next = max(self._next, oldest + 1)

    def _resync(self, seq: int) -> None:
        self._held.clear()
        self._next = seq
        self._playing = False
