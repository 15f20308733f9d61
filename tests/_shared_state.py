"""Builds each SharedState implementation for the contract tests, and the Redis helpers the
Redis-specific tests share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from conftest import require
from voxgate.control.shared import MemorySharedState, SharedState
from voxgate.storage.redis_state import RedisSharedState

REDIS_URL = os.environ.get("VOXGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable() -> bool:
    host, port = "127.0.0.1", 6379
    if "://" in REDIS_URL:
        netloc = REDIS_URL.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port_text = netloc.partition(":")
        port = int(port_text or 6379)
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> None:
    require(redis_reachable(), f"Redis at {REDIS_URL} (set VOXGATE_TEST_REDIS_URL)")


async def wait_until(predicate: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    """Poll an outside state (Redis) until it holds or `within_s` passes."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(await predicate())


def random_prefix() -> str:
    return f"voxgate-test-{uuid.uuid4().hex[:12]}:"


async def delete_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def own_prefix() -> AsyncIterator[str]:
    """A Redis key prefix for one test, its keys deleted after it (Redis required): wrapped
    as a module's ``prefix`` fixture with ``pytest.fixture(own_prefix)``."""
    require_redis()
    prefix = random_prefix()
    yield prefix
    await delete_prefix(prefix)


@contextlib.asynccontextmanager
async def redis_state(
    prefix: str | None = None, lease_ttl_s: float = 10.0
) -> AsyncIterator[RedisSharedState]:
    require_redis()
    prefix = prefix or random_prefix()
    state = await RedisSharedState.connect(REDIS_URL, prefix=prefix, lease_ttl_s=lease_ttl_s)
    try:
        yield state
    finally:
        await state.aclose()
        await delete_prefix(prefix)


@contextlib.asynccontextmanager
async def make_shared_state(kind: str) -> AsyncIterator[SharedState]:
    if kind == "memory":
        memory = MemorySharedState()
        try:
            yield memory
        finally:
            await memory.aclose()
    elif kind == "redis":
        async with redis_state() as state:
            yield state
    else:
        raise ValueError(f"unknown shared state {kind!r}")
