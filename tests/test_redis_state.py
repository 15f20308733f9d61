"""What only the Redis SharedState does: several replicas share one state, leases and calls of a
dead replica expire by themselves, revocations reach every replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from _shared_state import REDIS_URL, random_prefix, redis_state, wait_until
from voxgate.storage.redis_state import RedisSharedState

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A replica in its own process: takes a lease and registers a call, renews both, then waits
# to be killed.
REPLICA = """
import asyncio, sys
from voxgate.storage.redis_state import RedisSharedState

async def main(url, prefix):
    state = await RedisSharedState.connect(url, prefix=prefix, lease_ttl_s=2.0)
    assert await state.acquire("key:k1", 1, "doomed")
    await state.register_call("rtc_doomed", "http://replica-a", 2.0)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_replicas_share_leases_counters_and_calls() -> None:
    prefix = random_prefix()
    async with redis_state(prefix) as a, redis_state(prefix) as b:
        assert await a.acquire("user:u1", 2, "a1")
        assert await b.acquire("user:u1", 2, "b1")
        assert not await a.acquire("user:u1", 2, "a2")
        assert not await b.acquire("user:u1", 2, "b2")
        await a.release("user:u1", "a1")
        assert await b.acquire("user:u1", 2, "b2")

        await a.add("usd:day", 1.25, 60)
        assert await b.add("usd:day", 0.5, 60) == pytest.approx(1.75)
        assert await a.get("usd:day") == pytest.approx(1.75)

        await a.register_call("rtc_x", "http://replica-a:8000", 30)
        assert await b.call_owner("rtc_x") == "http://replica-a:8000"

        # A one-use claim made through one replica is refused by the other.
        assert await a.claim("twilio:t1", 30)
        assert not await b.claim("twilio:t1", 30)
        assert not await a.claim("twilio:t1", 30)


async def test_a_revocation_reaches_every_replica() -> None:
    prefix = random_prefix()
    async with redis_state(prefix) as a, redis_state(prefix) as b:
        heard: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
        got: list[tuple[str, str, str]] = []
        for name, state in (("a", a), ("b", b)):

            def listener(kind: str, ident: str, name: str = name) -> None:
                got.append((name, kind, ident))
                heard[name].set()

            state.on_revoke(listener)
        await a.revoke("secret", "cs_123", 60)
        # The marker is in Redis before revoke returns: the other replica refuses at once.
        assert await b.is_revoked("secret", "cs_123")
        await asyncio.wait_for(asyncio.gather(heard["a"].wait(), heard["b"].wait()), 10)
        assert sorted(got) == [("a", "secret", "cs_123"), ("b", "secret", "cs_123")]


async def test_a_live_replica_keeps_its_lease_and_call_past_their_ttl() -> None:
    prefix = random_prefix()
    # Renewed every 0.5 s: a second of slack for a busy machine.
    async with redis_state(prefix, lease_ttl_s=1.5) as a, redis_state(prefix) as b:
        assert await a.acquire("key:k", 1, "held")
        await a.register_call("rtc_live", "http://replica-a", 1.5)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            # Watch the lease's expiry move forward: renewal, not a long TTL, keeps it.
            first = await client.zscore(f"{prefix}lease:key:k", "held")
            assert await wait_until(
                lambda: _score_moved(client, f"{prefix}lease:key:k", "held", first), 10
            )
        finally:
            await client.aclose()
        await asyncio.sleep(3.2)  # two TTLs: without renewal both would be gone
        assert not await b.acquire("key:k", 1, "other")
        assert await b.call_owner("rtc_live") == "http://replica-a"


async def _score_moved(client: aioredis.Redis, key: str, member: str, first: float) -> bool:
    score = await client.zscore(key, member)
    return score is not None and score > first


async def test_a_dead_replicas_lease_and_call_expire() -> None:
    prefix = random_prefix()
    async with redis_state(prefix) as b:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", REPLICA, REDIS_URL, prefix,
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line.strip() == b"ready"
            assert not await b.acquire("key:k1", 1, "mine")
            assert await b.call_owner("rtc_doomed") == "http://replica-a"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        # Nobody released anything: only the expiry frees the slot and the directory entry.
        assert await wait_until(lambda: b.acquire("key:k1", 1, "mine"), 10)
        assert await b.call_owner("rtc_doomed") is None


async def test_closing_a_replica_gives_its_leases_back_at_once() -> None:
    prefix = random_prefix()
    async with redis_state(prefix) as b:
        async with redis_state(prefix) as a:
            assert await a.acquire("key:k", 1, "a1")
            await a.register_call("rtc_a", "http://replica-a", 30)
            assert not await b.acquire("key:k", 1, "b1")
        assert await b.acquire("key:k", 1, "b1")
        assert await b.call_owner("rtc_a") is None


async def test_counter_ttl_starts_at_creation() -> None:
    prefix = random_prefix()
    async with redis_state(prefix) as a:
        await a.add("usd:day", 1.0, 60)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            first = await client.pttl(f"{prefix}ctr:usd:day")
            assert 0 < first <= 60_000
            await a.add("usd:day", 1.0, 3600)
            assert await client.pttl(f"{prefix}ctr:usd:day") <= first
            await a.add("short", 1.0, 0.2)
            assert await wait_until(lambda: _is_zero(a, "short"), 10)
        finally:
            await client.aclose()


async def _is_zero(state: RedisSharedState, counter: str) -> bool:
    return bool(await state.get(counter) == 0.0)


async def test_leases_and_calls_lost_by_redis_are_entered_again_while_their_replica_lives() -> None:
    prefix = random_prefix()
    async with redis_state(prefix, lease_ttl_s=0.6) as a, redis_state(prefix) as b:
        assert await a.acquire("key:k", 1, "held")
        await a.register_call("rtc_live", "http://replica-a", 30)
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            # What a Redis restart without persistence does.
            await client.delete(f"{prefix}lease:key:k", f"{prefix}call:rtc_live")
        finally:
            await client.aclose()
        assert await wait_until(lambda: _full(b, "key:k"), 10)
        assert await wait_until(lambda: _owned(b, "rtc_live"), 10)
        # Giving back stays given back, however renewals interleave.
        await a.release("key:k", "held")
        await a.unregister_call("rtc_live")
        await asyncio.sleep(0.6)  # renewal rounds run in between
        assert await b.acquire("key:k", 1, "other")
        assert await b.call_owner("rtc_live") is None


async def _full(state: RedisSharedState, scope: str) -> bool:
    if await state.acquire(scope, 1, "probe"):
        await state.release(scope, "probe")
        return False
    return True


async def _owned(state: RedisSharedState, call_id: str) -> bool:
    return await state.call_owner(call_id) == "http://replica-a"


async def test_revocations_still_arrive_after_the_channel_connection_drops() -> None:
    prefix = random_prefix()
    name = f"vx-test-{prefix.rstrip(':')[-12:]}"
    a = await RedisSharedState.connect(REDIS_URL, prefix=prefix, client_name=name)
    try:
        async with redis_state(prefix) as b:
            heard: list[str] = []
            arrived = asyncio.Event()

            def listener(kind: str, ident: str) -> None:
                heard.append(ident)
                arrived.set()

            a.on_revoke(listener)
            admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                # Only this test's own subscriber connection is cut.
                clients = await admin.client_list(_type="pubsub")
                ours = [c["id"] for c in clients if c.get("name") == name]
                assert ours, "the subscriber connection was not found"
                for client_id in ours:
                    await admin.client_kill_filter(_id=client_id)
            finally:
                await admin.aclose()
            # Revoke until one arrives: a message published while the listener is
            # reconnecting is lost on the channel (the store still carries it).
            for i in range(100):
                await b.revoke("key", f"k{i}", 60)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.2)
                    break
            assert heard, "no revocation arrived after the connection dropped"
    finally:
        await a.aclose()
