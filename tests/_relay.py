"""Helpers for the relay tests: the relaying server under test (keys required, its own
store, ``gpt-realtime*`` relayed to an upstream voxgate process) and what its clients saw."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import validated

ADMIN_KEY = "sk-relay-admin-key-for-tests"
MODEL = "gpt-realtime"


def module_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    """The body of each relay test module's ``upstream`` fixture: one upstream process per
    module. Its token budget makes it report ``rate_limits.updated`` after each response, as
    the hosted API does."""
    env = {"VOXGATE_POLICY": json.dumps({"budget_tokens_per_session": 1_000_000})}
    with upstream_voxgate(tmp_path_factory.mktemp("upstream"), env=env) as up:
        yield up


def relay_server(start_server: Any, up: UpstreamVoxgate, tmp_path: Path, **settings: Any) -> Any:
    settings.setdefault("upstreams", [up.setting(models=["gpt-realtime*"])])
    database = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    return start_server(api_keys=[ADMIN_KEY], database_url=database, **settings)


def client(server: Any, key: str = ADMIN_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=key)


class Seen:
    """Every server event a client received, as JSON, each validated by the SDK's types."""

    def __init__(self) -> None:
        self.raw: list[str] = []

    def add(self, event: Any) -> Any:
        text = event.to_json() if hasattr(event, "to_json") else json.dumps(event)
        validated(text)
        self.raw.append(text)
        return event


async def next_event(conn: Any, seen: Seen | None = None, timeout_s: float = 20) -> Any:
    event = await asyncio.wait_for(conn.recv(), timeout_s)
    return seen.add(event) if seen is not None else event


async def events_until(conn: Any, seen: Seen, kind: str, timeout_s: float = 30) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout_s):
        async for event in conn:
            got.append(seen.add(event))
            if event.type == kind:
                return got
    raise AssertionError(f"the connection closed before {kind}")


async def say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()


async def rest_get(base_url: str, path: str, key: str = ADMIN_KEY) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{base_url}{path}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()
