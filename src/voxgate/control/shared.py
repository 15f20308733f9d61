"""State that every replica of a deployment must agree on: concurrency leases, budget counters,
revocations, one-use claims (a Twilio media token admits one stream) and the directory of
live calls.

`SharedState` is the interface the controls code against. `MemorySharedState` is the
single-process implementation (the default when no Redis is configured); the Redis one lives in
`voxgate.storage.redis_state` and passes the same contract tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

RevokeCallback = Callable[[str, str], None]
"""Called with ``(kind, ident)`` when a key or client secret is revoked on any replica."""


class SharedState(Protocol):
    async def acquire(self, scope: str, limit: int, lease_id: str) -> bool:
        """Take one of `limit` concurrency slots in `scope` under `lease_id`; False when full.
        Acquiring a lease already held in that scope succeeds without taking another slot.
        The lease is held until `release` while this replica lives, and is freed by itself
        soon after the replica dies, so a crash does not leak slots."""
        ...

    async def release(self, scope: str, lease_id: str) -> None:
        """Give the slot back; releasing an unknown lease does nothing."""
        ...

    async def add(self, counter: str, amount: float, ttl_s: float) -> float:
        """Add to a counter and return the new total. The counter expires `ttl_s` after it
        was created (later additions do not extend it), so a daily budget resets by itself."""
        ...

    async def get(self, counter: str) -> float:
        """The counter's total; 0 when it never existed or has expired."""
        ...

    async def revoke(self, kind: str, ident: str, ttl_s: float) -> None:
        """Mark a credential (`kind` "key" or "secret") revoked for `ttl_s` seconds and call
        every replica's `on_revoke` callbacks."""
        ...

    async def is_revoked(self, kind: str, ident: str) -> bool: ...

    def on_revoke(self, callback: RevokeCallback) -> None:
        """Register a callback run (on the event loop) for every revocation, from any replica."""
        ...

    async def claim(self, name: str, ttl_s: float) -> bool:
        """True for the first claim of `name` on any replica, False for every later one until
        `ttl_s` has passed (a one-use token: `ttl_s` is its remaining lifetime)."""
        ...

    async def register_call(self, call_id: str, owner: str, ttl_s: float) -> None:
        """Record that `owner` (a replica's advertised URL) holds the call. The entry lives
        until `unregister_call` while this replica lives (the implementation renews it) and
        disappears within `ttl_s` of the replica's death."""
        ...

    async def unregister_call(self, call_id: str) -> None: ...

    async def call_owner(self, call_id: str) -> str | None: ...

    async def aclose(self) -> None: ...


class MonotonicClock(Protocol):
    """The part of a clock this module reads (the session clocks satisfy it)."""

    def monotonic(self) -> float: ...


class _SystemMonotonic:
    def monotonic(self) -> float:
        return time.monotonic()


class MemorySharedState:
    """`SharedState` for a single process. Every method runs to completion without awaiting,
    so each operation is atomic on the event loop. Leases and calls never expire here: they die
    with the process that holds them. Expired counters and revocations are dropped when read
    and swept on writes, so the maps stay bounded by what is live."""

    def __init__(self, clock: MonotonicClock | None = None) -> None:
        self._clock = clock or _SystemMonotonic()
        self._leases: dict[str, set[str]] = {}
        self._counters: dict[str, tuple[float, float]] = {}  # name -> (total, expires_at)
        self._revoked: dict[tuple[str, str], float] = {}  # (kind, ident) -> expires_at
        self._calls: dict[str, str] = {}  # call_id -> owner
        self._claims: dict[str, float] = {}  # name -> expires_at
        self._callbacks: list[RevokeCallback] = []
        self._swept_at = float("-inf")

    async def acquire(self, scope: str, limit: int, lease_id: str) -> bool:
        held = self._leases.setdefault(scope, set())
        if lease_id in held:
            return True
        if len(held) >= limit:
            return False
        held.add(lease_id)
        return True

    async def release(self, scope: str, lease_id: str) -> None:
        held = self._leases.get(scope)
        if held is None:
            return
        held.discard(lease_id)
        if not held:
            del self._leases[scope]

    async def add(self, counter: str, amount: float, ttl_s: float) -> float:
        now = self._clock.monotonic()
        self._sweep(now)
        total, expires_at = self._counters.get(counter, (0.0, now + ttl_s))
        total += amount
        self._counters[counter] = (total, expires_at)
        return total

    async def get(self, counter: str) -> float:
        entry = self._counters.get(counter)
        if entry is None or entry[1] <= self._clock.monotonic():
            return 0.0
        return entry[0]

    async def revoke(self, kind: str, ident: str, ttl_s: float) -> None:
        now = self._clock.monotonic()
        self._sweep(now)
        self._revoked[(kind, ident)] = now + ttl_s
        for callback in list(self._callbacks):
            _run_callback(callback, kind, ident)

    async def is_revoked(self, kind: str, ident: str) -> bool:
        expires_at = self._revoked.get((kind, ident))
        return expires_at is not None and expires_at > self._clock.monotonic()

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._callbacks.append(callback)

    async def claim(self, name: str, ttl_s: float) -> bool:
        now = self._clock.monotonic()
        self._sweep(now)
        expires_at = self._claims.get(name)
        if expires_at is not None and expires_at > now:
            return False
        self._claims[name] = now + ttl_s
        return True

    async def register_call(self, call_id: str, owner: str, ttl_s: float) -> None:
        self._calls[call_id] = owner

    async def unregister_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    async def call_owner(self, call_id: str) -> str | None:
        return self._calls.get(call_id)

    async def aclose(self) -> None:
        self._callbacks.clear()

    def _sweep(self, now: float) -> None:
        # At most once a second: a write stays O(1) on average however many entries are live.
        if now - self._swept_at < 1.0:
            return
        self._swept_at = now
        for name in [n for n, (_, exp) in self._counters.items() if exp <= now]:
            del self._counters[name]
        for key in [k for k, exp in self._revoked.items() if exp <= now]:
            del self._revoked[key]
        for name in [n for n, exp in self._claims.items() if exp <= now]:
            del self._claims[name]


def _run_callback(callback: RevokeCallback, kind: str, ident: str) -> None:
    # One broken listener must not stop the others from ending their sessions.
    try:
        callback(kind, ident)
    except Exception:
        log.exception("revocation callback failed for %s", kind)
