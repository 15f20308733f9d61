"""What sharing state between replicas costs and how fast revocations travel.

Against the Redis at ``--redis`` (default redis://127.0.0.1:6379/0), under a random key prefix
that is deleted afterwards, and in the same run against the in-process state:

- admission leases: taking and giving back the two leases an admission holds (per key and
  per user), as one round; p50 and p99 in ms (part of the admission budget of ≤ 5 ms at p99);
- budget counter additions (one per response): p50 and p99 in ms;
- revocation propagation: one replica revokes, another replica's callback runs; p50, p95 and
  the maximum in ms (target: every replica within 1000 ms).

Prints one JSON object. Usage: ``python bench/shared_state.py [--rounds 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from _realtime import machine
from _speech import percentile
from voxgate.control.shared import MemorySharedState, SharedState
from voxgate.storage.redis_state import RedisSharedState

ADMISSION_P99_MS = 5.0
REVOCATION_MS = 1000.0


def summary(samples_s: list[float], *qs: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in qs:
        value = percentile(samples_s, q)
        out[f"p{q:g}_ms"] = None if value is None else round(value * 1000, 3)
    return out


async def leases_and_counters(state: SharedState, rounds: int) -> dict[str, Any]:
    leases, adds = [], []
    for i in range(rounds):
        lease = f"sess_{i}"
        start = time.perf_counter()
        assert await state.acquire("key:bench", 1000, lease)
        assert await state.acquire("user:bench", 1000, lease)
        await state.release("key:bench", lease)
        await state.release("user:bench", lease)
        leases.append(time.perf_counter() - start)
        start = time.perf_counter()
        await state.add("usd:day:bench", 0.001, 86400)
        adds.append(time.perf_counter() - start)
    return {"leases": summary(leases, 50, 99), "counter_add": summary(adds, 50, 99)}


async def revocation_latency(url: str, prefix: str, rounds: int) -> dict[str, Any]:
    a = await RedisSharedState.connect(url, prefix=prefix)
    b = await RedisSharedState.connect(url, prefix=prefix)
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Event] = {}

    def heard(kind: str, ident: str) -> None:
        arrived[ident] = time.perf_counter()
        waiting[ident].set()

    b.on_revoke(heard)
    samples = []
    try:
        for i in range(rounds):
            ident = f"cs_{i}"
            waiting[ident] = asyncio.Event()
            start = time.perf_counter()
            await a.revoke("secret", ident, 60)
            await asyncio.wait_for(waiting[ident].wait(), 10)
            samples.append(arrived[ident] - start)
    finally:
        await a.aclose()
        await b.aclose()
    result = summary(samples, 50, 95)
    result["max_ms"] = round(max(samples) * 1000, 3)
    return result


async def main(url: str, rounds: int) -> dict[str, Any]:
    prefix = f"voxgate-bench-{uuid.uuid4().hex[:8]}:"
    memory = await leases_and_counters(MemorySharedState(), rounds)
    redis_state = await RedisSharedState.connect(url, prefix=prefix)
    try:
        shared = await leases_and_counters(redis_state, rounds)
    finally:
        await redis_state.aclose()
    try:
        revocation = await revocation_latency(url, prefix, min(rounds, 200))
    finally:
        client = aioredis.Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    met = {
        "leases_p99": (shared["leases"]["p99_ms"] or 0) <= ADMISSION_P99_MS,
        "revocation": revocation["max_ms"] <= REVOCATION_MS,
    }
    return {
        "rounds": rounds,
        "memory": memory,
        "redis": shared,
        "revocation_propagation": revocation,
        "targets": {"leases_p99_ms": ADMISSION_P99_MS, "revocation_max_ms": REVOCATION_MS},
        "met": met,
        "all_met": all(met.values()),
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.rounds)), indent=2))
