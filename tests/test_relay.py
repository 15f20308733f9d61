"""Sessions relayed to an upstream Realtime service (a second voxgate process), seen by the
official `openai` SDK and the Agents SDK: events pass through unchanged, the controls apply
in the path, usage reaches the relaying server's ledger, and the upstream's key stays there."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from openai import AsyncOpenAI

from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import RunningServer, validated

ADMIN_KEY = "sk-relay-admin-key-for-tests"
MODEL = "gpt-realtime"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    with upstream_voxgate(tmp_path_factory.mktemp("upstream")) as up:
        yield up


def relay_server(start_server: Any, up: UpstreamVoxgate, tmp_path: Path, **settings: Any) -> Any:
    """The server under test: keys required, a fresh store, gpt-realtime* relayed to ``up``."""
    settings.setdefault("upstreams", [up.setting(models=["gpt-realtime*"])])
    return start_server(
        api_keys=[ADMIN_KEY],
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        **settings,
    )


def client(server: RunningServer, key: str = ADMIN_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=key)


class Seen:
    """Every server event a client received, raw and validated by the SDK's types."""

    def __init__(self) -> None:
        self.raw: list[str] = []

    def add(self, event: Any) -> Any:
        text = event.to_json() if hasattr(event, "to_json") else json.dumps(event)
        validated(text)
        self.raw.append(text)
        return event

    def types(self) -> list[str]:
        return [json.loads(r)["type"] for r in self.raw]


async def events_until(conn: Any, seen: Seen, kind: str, timeout_s: float = 30) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout_s):
        async for event in conn:
            got.append(seen.add(event))
            if event.type == kind:
                return got
    raise AssertionError(f"the connection closed before {kind}")


async def admin_get(server: RunningServer, path: str, key: str = ADMIN_KEY) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{server.base_url}{path}", headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_sdk_talks_to_the_upstream_through_the_relay(
    start_server: Any,
    upstream: UpstreamVoxgate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = relay_server(start_server, upstream, tmp_path)
    seen = Seen()
    async with client(server) as c, c.realtime.connect(model=MODEL) as conn:
        created = seen.add(await asyncio.wait_for(conn.recv(), 20))
        assert created.type == "session.created"
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tell me about the sea."}],
            }
        )
        await conn.response.create()
        events = await events_until(conn, seen, "response.done")
    done = events[-1]
    assert done.response.status == "completed"
    assert any(e.type == "response.output_audio.delta" for e in events)
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert "the sea" in transcript.lower()

    # The session, its responses and items are the upstream's: the upstream's own books
    # hold the session the client saw and the response it was told about.
    upstream_session = await admin_get(
        _Http(upstream.http_url), f"/admin/sessions/{created.session.id}", upstream.api_key
    )
    assert [u["response_id"] for u in upstream_session["usage"]] == [done.response.id]
    said = {t["item_id"] for t in upstream_session["transcript"] if t["role"] == "assistant"}
    assert {item.id for item in done.response.output} <= said

    # The relaying server's own books: a session of its own (another id) on the upstream
    # engine, whose usage row is the upstream response, priced at the model's list price.
    listed = await admin_get(server, "/admin/sessions")
    (mine,) = listed["data"]
    assert mine["id"] != created.session.id
    assert mine["engine"] == "upstream:default"
    record = await _eventually_usage(server, mine["id"])
    (row,) = record["usage"]
    assert row["response_id"] == done.response.id
    assert row["model"] == MODEL
    assert row["output_audio_tokens"] == done.response.usage.output_token_details.audio_tokens
    assert row["cost_usd"] > 0

    # The upstream's key went upstream only.
    assert all(upstream.api_key not in raw for raw in seen.raw)
    assert upstream.api_key not in caplog.text
    assert caplog.records, "the server's log was captured"


class _Http:
    """The REST base of a server that is not a RunningServer (the upstream process)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


async def _eventually_usage(server: RunningServer, session_id: str) -> Any:
    # The usage row is durable before the client sees response.done: one read is enough.
    return await admin_get(server, f"/admin/sessions/{session_id}")


calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather for a city."""
    calls.append(city)
    return f"It is sunny and 21 degrees in {city}."


async def test_an_agent_calls_a_tool_through_the_relay(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path
) -> None:
    calls.clear()
    server = relay_server(start_server, upstream, tmp_path)
    agent = RealtimeAgent(
        name="Assistant", instructions="Help with the weather.", tools=[get_weather]
    )
    session = await RealtimeRunner(agent).run(
        model_config={"url": server.ws_url + f"?model={MODEL}", "api_key": ADMIN_KEY}
    )
    seen: list[Any] = []
    errors: list[Any] = []
    async with session:
        await session.send_message("What is the get weather for Paris?")
        async with asyncio.timeout(30):
            async for event in session:
                seen.append(event)
                if event.type == "error" or (
                    event.type == "raw_model_event" and event.data.type == "error"
                ):
                    errors.append(event)
                ends = sum(e.type == "agent_end" for e in seen)
                if ends >= 2 and any(e.type == "tool_end" for e in seen):
                    break
    assert not errors, errors
    assert calls == ["Paris"]
    tool_start = next(e for e in seen if e.type == "tool_start")
    assert any(e.type == "audio" for e in seen[seen.index(tool_start) :])
    spoken = [
        part.transcript
        for item in session._history
        if getattr(item, "role", None) == "assistant"
        for part in item.content
        if getattr(part, "transcript", None)
    ]
    assert any("sunny and 21 degrees in Paris" in text for text in spoken), spoken
