"""A small jitter buffer for inbound RTP audio, sans-IO.

Packets arrive out of order, late, twice or not at all. The listener is a machine (voice
activity detection and speech-to-text), not a loudspeaker: it needs the audio in order and the
right length, not at an even pace. So audio is released as soon as it is in order, and the
listener's clock only decides when to stop waiting for a packet. Rules:
- `release` hands over every packet held from the one due next on, consecutively: a packet
  that arrives in order is heard at once, with no fixed buffering delay.
- `conceal` is for a slot the clock says is overdue (the reader waits ``depth`` packets'
  time before calling it). A missing packet whose successor is already held is lost: its slot
  plays as silence (concealment) and it is never waited for again. With nothing held (the
  caller's phone stopped sending during silence, or the network stalled) the slot plays as
  silence and the packet due next is still awaited.
- A packet that arrives after its slot played, or a second copy of one held, is dropped.
- At most ``max_depth`` packets are held; past that the oldest are skipped, so a burst never
  builds latency beyond ``max_depth`` packets.
- A jump of more than twice ``max_depth`` in sequence numbers (a restarted sender)
  resynchronises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .rtp_wire import SequenceUnwrapper

DEPTH = 3  # 60 ms: how long a missing packet is waited for before it is concealed
MAX_DEPTH = 10  # 200 ms at most


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0  # slots concealed by silence while a later packet was held
    late: int = 0
    duplicate: int = 0
    overflow: int = 0  # packets skipped because too many were held
    underruns: int = 0  # slots concealed by silence with nothing held


@dataclass
class JitterBuffer:
    depth: int = DEPTH
    max_depth: int = MAX_DEPTH
    stats: JitterStats = field(default_factory=JitterStats)

    def __post_init__(self) -> None:
        self._held: dict[int, bytes] = {}
        self._next: int | None = None  # the extended sequence number due to play
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

    def release(self) -> list[bytes]:
        """The audio that can be heard now: the packets held from the one due next on, in
        sequence, up to the first one missing."""
        out: list[bytes] = []
        while self._next is not None and self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        self.stats.played += len(out)
        return out

    def conceal(self) -> None:
        """The slot due next is overdue: it plays as silence (the reader's to make). If a
        later packet is held the missing one is lost; else it is still awaited."""
        if self._held:
            assert self._next is not None
            self._next += 1
            self.stats.lost += 1
        else:
            self.stats.underruns += 1

    def _skip_oldest(self) -> None:
        oldest = min(self._held)
        del self._held[oldest]
        self.stats.overflow += 1
        assert self._next is not None
        self._next = max(self._next, oldest + 1)

    def _resync(self, seq: int) -> None:
        self._held.clear()
        self._next = seq
