"""The timers of the SIP user agent's transactions (RFC 3261 §17), sans-IO: when each one runs
depends on whether the transport is reliable, and that is the caller's input.

| timer | what it does                                  | unreliable (UDP) | reliable (TCP) |
|-------|-----------------------------------------------|------------------|----------------|
| A / E | client retransmits INVITE / other request     | from T1          | not used       |
| B / F | client gives up on INVITE / other request     | 64·T1            | 64·T1          |
| D     | client re-ACKs retransmitted INVITE failures  | 32 s             | 0              |
| K     | client absorbs retransmitted final responses  | T4               | 0              |
| G     | server retransmits an INVITE's final non-2xx  | from T1          | not used       |
| H     | server gives up waiting for that ACK          | 64·T1            | 64·T1          |
| I     | server absorbs retransmitted ACKs             | T4               | 0              |
| J     | server answers retransmitted other requests   | 64·T1            | 0              |

The 2xx to an INVITE is not a transaction's: the dialog layer retransmits it until the ACK on
every transport (§13.3.1.4), because a proxy beyond a TCP hop may forward it over UDP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .events import Output

T1, T2, T4 = 0.5, 4.0, 5.0
V = TypeVar("V")


@dataclass(frozen=True)
class TimerRules:
    """The transaction timers of one kind of transport (the table above)."""

    retransmits: bool  # timers A, E and G
    timer_d: float
    timer_i: float
    timer_j: float
    timer_k: float
    timeout: float = 64 * T1  # timers B, F and H


UNRELIABLE = TimerRules(retransmits=True, timer_d=32.0, timer_i=T4, timer_j=64 * T1, timer_k=T4)
RELIABLE = TimerRules(retransmits=False, timer_d=0.0, timer_i=0.0, timer_j=0.0, timer_k=0.0)


def rules_for(reliable: bool) -> TimerRules:
    return RELIABLE if reliable else UNRELIABLE


Fire = Callable[[float], list[Output]]
TimerKey = tuple[str, ...]


@dataclass
class _Timer:
    deadline: float
    fire: Fire


class Timers:
    """Named deadlines. Keys are tuples — ("call", call id, kind) or ("tx", branch, kind) —
    so that no Call-ID or branch a peer picks can name another call's timers."""

    def __init__(self) -> None:
        self._timers: dict[TimerKey, _Timer] = {}

    def at(self, key: TimerKey, deadline: float, fire: Fire) -> None:
        self._timers[key] = _Timer(deadline, fire)

    def cancel(self, *prefix: str) -> None:
        for key in [k for k in self._timers if k[: len(prefix)] == prefix]:
            del self._timers[key]

    def pending(self, *prefix: str) -> list[TimerKey]:
        """The keys of the timers set under ``prefix`` (for tests and diagnostics)."""
        return sorted(k for k in self._timers if k[: len(prefix)] == prefix)

    def next_deadline(self) -> float | None:
        return min((t.deadline for t in self._timers.values()), default=None)

    def run_due(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``, earliest first; a timer cancelled or replaced by
        one fired before it does not fire."""
        out: list[Output] = []
        for key, timer in sorted(self._timers.items(), key=lambda kv: kv[1].deadline):
            if timer.deadline <= now and self._timers.get(key) is timer:
                del self._timers[key]
                out += timer.fire(now)
        return out


class Remembered(Generic[V]):
    """What a transaction keeps for retransmissions of what it answered (timers D, J), each
    entry until its own expiry; an entry kept for 0 s is never found."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[V, float]] = {}

    def keep(self, key: tuple[str, str], value: V, until: float, now: float) -> None:
        if until > now:
            self._entries[key] = (value, until)

    def get(self, key: tuple[str, str], now: float) -> V | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > now else None

    def expire(self, now: float) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
