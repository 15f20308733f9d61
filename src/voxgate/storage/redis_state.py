"""`SharedState` in Redis, so several replicas enforce one set of limits.

Keys (all under a configurable prefix):
- ``lease:{scope}``: a sorted set of lease ids scored by their expiry (Redis server time, ms).
  Acquisition drops expired members and counts the rest in one Lua script, so two replicas
  can never both take the last slot. The owning replica renews its leases every third of the
  lease TTL (entering them again if Redis lost them); when it dies, its leases expire and the
  slots come back by themselves.
- ``ctr:{name}``: a float counter (INCRBYFLOAT) whose TTL is set when it is created.
- ``revoked:{kind}:{ident}``: a marker with the revocation's TTL; every revocation is also
  published on the ``revocations`` channel, which each replica listens to and turns into
  `on_revoke` callbacks.
- ``claim:{name}``: a one-use claim, set only if absent (SET NX) with the claim's TTL, so
  exactly one replica's claim succeeds.
- ``call:{call_id}``: the advertised URL of the replica that owns a live call, renewed with the
  leases while that replica lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from voxgate.control.shared import RevokeCallback

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: lease sets; ARGV[1]: ttl ms, ARGV[i + 1]: the lease id held in KEYS[i].
# A lease that had vanished (Redis restarted, or this replica was cut off for longer than the
# TTL) is entered again: its session is alive, so it counts. Returns how many were re-entered.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local reentered = 0
for i, key in ipairs(KEYS) do
  reentered = reentered + redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return reentered
"""

_ADD = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return total
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisSharedState:
    """Create with `await RedisSharedState.connect(url, prefix=...)`, which subscribes to
    revocations before returning (a revocation published after `connect` is never missed)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "voxgate:",
        lease_ttl_s: float = 10.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._lease_ttl_s = lease_ttl_s
        self._sleep = sleep
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._add = client.register_script(_ADD)
        # What this replica holds, so it can renew it and give it back on close.
        self._leases: set[tuple[str, str]] = set()
        self._calls: dict[str, tuple[str, float]] = {}
        # Held by a renewal round and by release/unregister, so a renewal in flight never
        # re-enters a lease or a call that was just given back.
        self._renewing = asyncio.Lock()
        self._callbacks: list[RevokeCallback] = []
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._renewer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "voxgate:",
        lease_ttl_s: float = 10.0,
        client_name: str = "voxgate",
    ) -> RedisSharedState:
        # The name shows in Redis' CLIENT LIST, so operators see which connections are ours.
        client = aioredis.Redis.from_url(url, decode_responses=True, client_name=client_name)
        state = cls(client, prefix=prefix, lease_ttl_s=lease_ttl_s)
        try:
            await state.start()
        except BaseException:
            await client.aclose()
            raise
        return state

    async def start(self) -> None:
        await self._redis.ping()
        await self._pubsub.subscribe(self._channel)
        self._renewer = asyncio.create_task(self._renew_forever(), name="redis-state-renewer")
        self._listener = asyncio.create_task(self._listen_forever(), name="redis-state-listener")

    @property
    def _channel(self) -> str:
        return f"{self._prefix}revocations"

    # Leases

    async def acquire(self, scope: str, limit: int, lease_id: str) -> bool:
        key = f"{self._prefix}lease:{scope}"
        args: list[str | int] = [lease_id, limit, _ms(self._lease_ttl_s)]
        taken = bool(await self._acquire(keys=[key], args=args))
        if taken:
            self._leases.add((scope, lease_id))
        return taken

    async def release(self, scope: str, lease_id: str) -> None:
        async with self._renewing:
            self._leases.discard((scope, lease_id))
            await self._redis.zrem(f"{self._prefix}lease:{scope}", lease_id)

    # Counters

    async def add(self, counter: str, amount: float, ttl_s: float) -> float:
        key = f"{self._prefix}ctr:{counter}"
        return float(await self._add(keys=[key], args=[repr(float(amount)), _ms(ttl_s)]))

    async def get(self, counter: str) -> float:
        value = await self._redis.get(f"{self._prefix}ctr:{counter}")
        return float(value) if value is not None else 0.0

    # Revocations

    async def revoke(self, kind: str, ident: str, ttl_s: float) -> None:
        await self._redis.set(f"{self._prefix}revoked:{kind}:{ident}", "1", px=_ms(ttl_s))
        await self._redis.publish(self._channel, json.dumps({"kind": kind, "ident": ident}))

    async def is_revoked(self, kind: str, ident: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}revoked:{kind}:{ident}"))

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._callbacks.append(callback)

    # One-use claims

    async def claim(self, name: str, ttl_s: float) -> bool:
        key = f"{self._prefix}claim:{name}"
        return bool(await self._redis.set(key, "1", nx=True, px=_ms(ttl_s)))

    # Call directory

    async def register_call(self, call_id: str, owner: str, ttl_s: float) -> None:
        self._calls[call_id] = (owner, ttl_s)
        await self._redis.set(f"{self._prefix}call:{call_id}", owner, px=_ms(ttl_s))

    async def unregister_call(self, call_id: str) -> None:
        async with self._renewing:
            self._calls.pop(call_id, None)
            await self._redis.delete(f"{self._prefix}call:{call_id}")

    async def call_owner(self, call_id: str) -> str | None:
        owner = await self._redis.get(f"{self._prefix}call:{call_id}")
        return None if owner is None else str(owner)

    # Life cycle

    async def aclose(self) -> None:
        """Stop renewing, give back what this replica holds, disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in (self._renewer, self._listener):
            if task is not None:
                task.cancel()
        for task in (self._renewer, self._listener):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._callbacks.clear()
        try:
            async with asyncio.timeout(5):
                await self._give_back()
        except (RedisError, OSError, TimeoutError):
            log.warning("could not release leases on close; they expire by themselves")
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        await self._redis.aclose()

    async def _give_back(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope, lease_id in self._leases:
                pipe.zrem(f"{self._prefix}lease:{scope}", lease_id)
            for call_id in self._calls:
                pipe.delete(f"{self._prefix}call:{call_id}")
            await pipe.execute()
        self._leases.clear()
        self._calls.clear()

    def _renew_interval(self) -> float:
        shortest = min([self._lease_ttl_s, *(ttl for _, ttl in self._calls.values())])
        return shortest / 3

    async def _renew_forever(self) -> None:
        while True:
            await self._sleep(self._renew_interval())
            try:
                await self._renew_once()
            except (RedisError, OSError) as exc:
                # Keep trying: the leases survive a blip shorter than their TTL.
                log.warning("renewing shared leases failed: %s", exc)

    async def _renew_once(self) -> None:
        async with self._renewing:
            await self._renew_held()

    async def _renew_held(self) -> None:
        leases = list(self._leases)
        if leases:
            keys = [f"{self._prefix}lease:{scope}" for scope, _ in leases]
            args: list[str | int] = [_ms(self._lease_ttl_s), *(lease for _, lease in leases)]
            reentered = int(await self._renew(keys=keys, args=args))
            if reentered:
                log.warning("%d shared lease(s) had expired and were entered again", reentered)
        if self._calls:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call_id, (owner, ttl_s) in self._calls.items():
                    pipe.set(f"{self._prefix}call:{call_id}", owner, px=_ms(ttl_s))
                await pipe.execute()

    async def _listen_forever(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except (RedisError, OSError, RuntimeError) as exc:
                # RuntimeError: redis-py's "not subscribed" after a failed resubscription.
                # Revocations missed meanwhile still reach sessions through the store.
                log.warning("revocation channel failed (%s); resubscribing", exc)
                await self._sleep(0.5)
                await self._resubscribe()
                continue
            if message is not None and message.get("type") == "message":
                self._dispatch(message["data"])

    async def _resubscribe(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.subscribe(self._channel)

    def _dispatch(self, data: str) -> None:
        try:
            parsed = json.loads(data)
            kind, ident = str(parsed["kind"]), str(parsed["ident"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed revocation message")
            return
        for callback in list(self._callbacks):
            try:
                callback(kind, ident)
            except Exception:
                log.exception("revocation callback failed for %s", kind)
