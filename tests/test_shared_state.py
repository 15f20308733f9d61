"""The SharedState contract, run over every implementation; expiry on an injected clock for the
in-process one (the Redis one's expiry is tested on real time in test_redis_state.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from _shared_state import make_shared_state
from voxgate.control.shared import MemorySharedState, SharedState
from voxgate.session.clock import VirtualClock


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    async with make_shared_state(request.param) as state:
        yield state


async def test_leases_cap_a_scope(shared: SharedState) -> None:
    assert await shared.acquire("key:a", 2, "s1")
    assert await shared.acquire("key:a", 2, "s2")
    assert not await shared.acquire("key:a", 2, "s3")
    # Another scope has its own slots.
    assert await shared.acquire("key:b", 2, "s3")
    await shared.release("key:a", "s1")
    assert await shared.acquire("key:a", 2, "s3")
    assert not await shared.acquire("key:a", 2, "s4")


async def test_acquiring_a_held_lease_takes_no_second_slot(shared: SharedState) -> None:
    assert await shared.acquire("user:u", 1, "s1")
    assert await shared.acquire("user:u", 1, "s1")
    await shared.release("user:u", "s1")
    assert await shared.acquire("user:u", 1, "s2")


async def test_releasing_an_unknown_lease_is_harmless(shared: SharedState) -> None:
    await shared.release("nowhere", "nobody")
    assert await shared.acquire("key:a", 1, "s1")
    await shared.release("key:a", "other")
    assert not await shared.acquire("key:a", 1, "s2")


async def test_concurrent_acquires_never_exceed_the_limit(shared: SharedState) -> None:
    results = await asyncio.gather(*(shared.acquire("key:c", 3, f"s{i}") for i in range(20)))
    assert sum(results) == 3


async def test_counters_add_and_read(shared: SharedState) -> None:
    assert await shared.get("usd:day") == 0.0
    assert await shared.add("usd:day", 0.25, 60) == pytest.approx(0.25)
    assert await shared.add("usd:day", 1.5, 60) == pytest.approx(1.75)
    assert await shared.get("usd:day") == pytest.approx(1.75)
    assert await shared.get("usd:other") == 0.0


async def test_revocations_are_remembered_and_announced(shared: SharedState) -> None:
    seen: list[tuple[str, str]] = []
    announced = asyncio.Event()

    def listener(kind: str, ident: str) -> None:
        seen.append((kind, ident))
        announced.set()

    shared.on_revoke(listener)
    assert not await shared.is_revoked("key", "k1")
    await shared.revoke("key", "k1", 60)
    assert await shared.is_revoked("key", "k1")
    assert not await shared.is_revoked("secret", "k1")
    await asyncio.wait_for(announced.wait(), 5)
    assert seen == [("key", "k1")]


async def test_a_failing_revocation_listener_does_not_stop_the_others(
    shared: SharedState,
) -> None:
    reached = asyncio.Event()

    def broken(kind: str, ident: str) -> None:
        raise RuntimeError("listener bug")

    shared.on_revoke(broken)
    shared.on_revoke(lambda kind, ident: reached.set())
    await shared.revoke("secret", "cs1", 60)
    await asyncio.wait_for(reached.wait(), 5)


async def test_call_directory(shared: SharedState) -> None:
    assert await shared.call_owner("rtc_1") is None
    await shared.register_call("rtc_1", "http://10.0.0.1:8000", 30)
    await shared.register_call("rtc_2", "http://10.0.0.2:8000", 30)
    assert await shared.call_owner("rtc_1") == "http://10.0.0.1:8000"
    assert await shared.call_owner("rtc_2") == "http://10.0.0.2:8000"
    await shared.unregister_call("rtc_1")
    assert await shared.call_owner("rtc_1") is None
    await shared.unregister_call("rtc_1")


async def test_a_claim_succeeds_once(shared: SharedState) -> None:
    assert await shared.claim("twilio:t1", 60)
    assert not await shared.claim("twilio:t1", 60)
    assert await shared.claim("twilio:t2", 60)


async def test_only_one_of_concurrent_claims_succeeds(shared: SharedState) -> None:
    won = await asyncio.gather(*(shared.claim("twilio:race", 60) for _ in range(20)))
    assert won.count(True) == 1


# Expiry on virtual time (in-process implementation).


async def test_counter_expires_after_its_ttl_from_creation() -> None:
    clock = VirtualClock()
    state = MemorySharedState(clock)
    await state.add("usd:day", 1.0, 10)
    await clock.advance(6)
    # A later addition does not extend the window.
    assert await state.add("usd:day", 2.0, 10) == pytest.approx(3.0)
    await clock.advance(5)
    assert await state.get("usd:day") == 0.0
    assert await state.add("usd:day", 0.5, 10) == pytest.approx(0.5)


async def test_revocation_expires_but_a_call_lives_until_unregistered() -> None:
    clock = VirtualClock()
    state = MemorySharedState(clock)
    await state.revoke("secret", "cs1", 5)
    await state.register_call("rtc_1", "http://a", 5)
    await clock.advance(4)
    assert await state.is_revoked("secret", "cs1")
    await clock.advance(2)
    assert not await state.is_revoked("secret", "cs1")
    # The process that registered it is alive, so the call is still its.
    assert await state.call_owner("rtc_1") == "http://a"


async def test_a_claim_is_held_for_its_ttl() -> None:
    clock = VirtualClock()
    state = MemorySharedState(clock)
    assert await state.claim("twilio:t1", 5)
    await clock.advance(4)
    assert not await state.claim("twilio:t1", 5)
    await clock.advance(2)
    assert await state.claim("twilio:t1", 5)


async def test_expired_entries_are_swept() -> None:
    clock = VirtualClock()
    state = MemorySharedState(clock)
    for i in range(100):
        await state.add(f"c{i}", 1.0, 1)
    await clock.advance(5)
    await state.add("fresh", 1.0, 1)
    assert state._counters.keys() == {"fresh"}
