"""Server tools in a relayed session: a second voxgate *process* is the upstream Realtime
service (its model the scripted one, over real HTTP); the server under test offers its tools
upstream, runs the calls the upstream's model makes, and keeps confirmations to itself.
The client is the official `openai` SDK; every event it reads is validated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from _realtime import Events
from _tool_model import Model, added, answer, tell
from _tool_service import ToolService
from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import RunningServer, SlowChatServer

ADMIN_KEY = "sk-static-admin-key-for-relayed-tools"
SECRET = "relay-tool-signing-secret"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ACCOUNT = {"type": "object", "properties": {"account_id": {"type": "string"}}}


@pytest.fixture(scope="module")
def service() -> Iterator[ToolService]:
    svc = ToolService(SECRET)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def model() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.01)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream(
    tmp_path_factory: pytest.TempPathFactory, model: SlowChatServer
) -> Iterator[UpstreamVoxgate]:
    env = {"VOXGATE_LLM_BASE_URL": model.url, "VOXGATE_LLM_MODEL": "scripted"}
    with upstream_voxgate(tmp_path_factory.mktemp("upstream"), env=env) as up:
        yield up


@pytest.fixture
def relay(
    start_server: Any, upstream: UpstreamVoxgate, service: ToolService, tmp_path: Path
) -> RunningServer:
    tools = [
        {"name": "get_weather", "kind": "http", "url": service.url("/weather"), "parameters": CITY},
        {
            "name": "delete_account",
            "kind": "http",
            "url": service.url("/delete"),
            "parameters": ACCOUNT,
            "effect": "destructive",
        },
    ]
    server: RunningServer = start_server(
        api_keys=[ADMIN_KEY],
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        upstreams=[upstream.setting(models=["gpt-realtime*"])],
        tools=tools,
        tools_signing_secret=SECRET,
    )
    return server


def output_items(seen: list[Any], kind: str) -> list[Any]:
    return [
        e.item for e in seen if e.type.startswith("response.output_item") and e.item.type == kind
    ]


async def test_relayed_read_tool_runs_here(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"weather": ("get_weather", {"city": "Paris"})})
    before = len(service.calls_to("/weather"))
    client = AsyncOpenAI(base_url=relay.base_url, api_key=ADMIN_KEY)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await tell(conn, "What is the weather in Paris?")
        seen, said = await answer(events)
    assert "sunny and 21 degrees in Paris" in said
    calls = service.calls_to("/weather")[before:]
    assert len(calls) == 1 and calls[0].signature_ok
    # The upstream's model was offered the server tools, and got the result from here.
    assert "get_weather" in {t["function"]["name"] for t in model.requests[-2]["tools"]}
    assert "sunny" in model.requests[-1]["messages"][-1]["content"]
    # The call was shown as a conversation item, never as response output to execute.
    assert [i.name for i in added(seen, "function_call")] == ["get_weather"]
    assert output_items(seen, "function_call") == []


async def test_relayed_destructive_tool_waits_for_the_approval_here(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"delete": ("delete_account", {"account_id": "42"})})
    before = len(service.calls_to("/delete"))
    client = AsyncOpenAI(base_url=relay.base_url, api_key=ADMIN_KEY)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await tell(conn, "Please delete account 42.")
        seen, readback = await answer(events)
        assert "Shall I go ahead" in readback
        [request] = added(seen, "mcp_approval_request")
        assert json.loads(request.arguments) == {"account_id": "42"}
        assert len(service.calls_to("/delete")) == before
        approval = {
            "type": "mcp_approval_response",
            "approval_request_id": request.id,
            "approve": True,
        }
        await conn.conversation.item.create(item=approval)  # type: ignore[arg-type]
        _, said = await answer(events)
        assert "account 42 is deleted" in said
        await conn.conversation.item.create(item=approval)  # type: ignore[arg-type]
        error = (await events.until("error")).pop()
        assert error.error.code == "approval_already_answered"
    assert len(service.calls_to("/delete")) == before + 1
