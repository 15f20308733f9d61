"""Helpers for the production-controls tests: a server with scripted engines and an admin key,
the admin REST API through httpx, and the SDK's realtime connection read event by event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from openai import AsyncOpenAI

from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.session.engines import EngineSet

ADMIN_KEY = "sk-static-admin-key-for-tests"
MODEL = "gpt-realtime"


def engines(answers: int = 20, text: str = "Hello from the test.") -> EngineSet:
    return EngineSet(llm=ScriptedLLM([text_script(text)] * answers), tts=ScriptedTTS())


def keyed_server(start_server: Callable[..., Any], database_url: str, **settings: Any) -> Any:
    """A server on a fresh store (``database_url``: SQLite, or PostgreSQL in CI) whose only
    key at start is a static admin key."""
    return start_server(
        settings.pop("engines", None) or engines(),
        api_keys=[ADMIN_KEY],
        database_url=database_url,
        **settings,
    )


async def execute(database_url: str, sql: str, **params: Any) -> None:
    """Change the store behind the server's back (to let time pass for a stored row)."""
    from sqlalchemy import text

    from voxgate.storage.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


class Admin:
    """The admin REST API as an operator's script calls it."""

    def __init__(self, server: Any, key: str = ADMIN_KEY) -> None:
        self.http = httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    async def create_key(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "test")
        response = await self.http.post("/admin/keys", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def aclose(self) -> None:
        await self.http.aclose()


def client(server: Any, key: str, user: str | None = None) -> AsyncOpenAI:
    headers = {"OpenAI-Safety-Identifier": user} if user else None
    return AsyncOpenAI(base_url=server.base_url, api_key=key, default_headers=headers)


async def next_event(connection: Any, timeout_s: float = 20.0) -> Any:
    return await asyncio.wait_for(connection.recv(), timeout_s)


async def refusal(server: Any, key: str, *, model: str = MODEL, user: str | None = None) -> Any:
    """The error a connection attempt gets (its first event), or the session.created."""
    async with (
        client(server, key, user) as c,
        c.realtime.connect(model=model) as conn,
    ):
        return await next_event(conn)
