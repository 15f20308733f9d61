"""Server tools in a relayed session: a second voxgate *process* is the upstream Realtime
service (its model the scripted one, over real HTTP); the server under test offers its tools
upstream, runs the calls the upstream's model makes, and keeps confirmations to itself.
The client is the official `openai` SDK; every event it reads is validated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from _realtime import Events
from _tool_model import Model, added, answer, answer_approval, tell
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
        {
            "name": "slow_forecast",
            "kind": "http",
            "url": service.url("/slow"),
            "parameters": CITY,
            "filler": "Hold on, I am looking.",
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


@asynccontextmanager
async def connected(relay: RunningServer) -> AsyncIterator[tuple[AsyncRealtimeConnection, Events]]:
    """An `openai` SDK realtime connection to the relay, past its session.created."""
    client = AsyncOpenAI(base_url=relay.base_url, api_key=ADMIN_KEY)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        yield conn, events


def output_items(seen: list[Any], kind: str) -> list[Any]:
    return [
        e.item for e in seen if e.type.startswith("response.output_item") and e.item.type == kind
    ]


async def test_relayed_read_tool_runs_here(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"weather": ("get_weather", {"city": "Paris"})})
    before = len(service.calls_to("/weather"))
    async with connected(relay) as (conn, events):
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
    # Nor listed in a response.done, where browser code commonly looks for calls to run.
    listed = [i for e in seen if e.type == "response.done" for i in e.response.output]
    assert [i.type for i in listed if i.type == "function_call"] == []
    assert any(i.type == "message" for i in listed)


async def test_relayed_destructive_tool_waits_for_the_approval_here(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"delete": ("delete_account", {"account_id": "42"})})
    before = len(service.calls_to("/delete"))
    async with connected(relay) as (conn, events):
        await tell(conn, "Please delete account 42.")
        seen, readback = await answer(events)
        assert "Shall I go ahead" in readback
        [request] = added(seen, "mcp_approval_request")
        assert json.loads(request.arguments) == {"account_id": "42"}
        assert len(service.calls_to("/delete")) == before
        await answer_approval(conn, request.id, approve=True)
        _, said = await answer(events)
        assert "account 42 is deleted" in said
        await answer_approval(conn, request.id, approve=True)
        error = (await events.until("error")).pop()
        assert error.error.code == "approval_already_answered"
    assert len(service.calls_to("/delete")) == before + 1


async def test_relayed_interrupted_readback_cancels_the_action(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    scripted = Model({"delete": ("delete_account", {"account_id": "7"})})
    scripted.readback_pieces = 60  # the question streams for a while: room to interrupt
    model.respond = scripted
    before = len(service.calls_to("/delete"))
    async with connected(relay) as (conn, events):
        await tell(conn, "Please delete account 7.")
        seen = await events.until(
            lambda e: e.type == "conversation.item.added" and e.item.type == "mcp_approval_request"
        )
        request = seen[-1].item
        created = await events.until("response.created")  # the read-back starts upstream
        await conn.response.cancel(response_id=created[-1].response.id)
        lapsed = await events.until(
            lambda e: e.type == "conversation.item.added" and e.item.type == "mcp_approval_response"
        )
        assert (lapsed[-1].item.approve, lapsed[-1].item.reason) == (False, "interrupted")
        await answer_approval(conn, request.id, approve=True)
        error = (await events.until("error")).pop()
        assert error.error.code == "approval_already_answered"
    assert len(service.calls_to("/delete")) == before


async def test_relayed_yes_in_the_users_next_turn_runs_the_action_once(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    # The user's turn reaches voxgate as the upstream reports it: here typed (a spoken turn
    # arrives as its transcript, when the session transcribes input).
    model.respond = Model({"delete": ("delete_account", {"account_id": "42"})})
    before = len(service.calls_to("/delete"))
    async with connected(relay) as (conn, events):
        await tell(conn, "Please delete account 42.")
        _, readback = await answer(events)
        assert "Shall I go ahead" in readback and len(service.calls_to("/delete")) == before
        await tell(conn, "Yes please.")
        said, seen = "", []
        while "deleted" not in said:  # the upstream's own reply to "yes" is cancelled
            more, said = await answer(events)
            seen += more
    assert "account 42 is deleted" in said
    assert len(service.calls_to("/delete")) == before + 1
    [approved] = added(seen, "mcp_approval_response")
    assert approved.approve is True and approved.reason == "spoken: Yes please."
    assert not any(e.type == "error" for e in seen), [e for e in seen if e.type == "error"]


async def test_relayed_slow_tool_says_its_filler_here_then_the_answer(
    relay: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"forecast": ("slow_forecast", {"city": "Oslo"})})
    async with connected(relay) as (conn, events):
        await tell(conn, "What is the forecast for Oslo?")
        first, filler = await answer(events)
        _, said = await answer(events)
        # The upstream was told what voxgate said, so its model knows it too.
        await conn.conversation.item.retrieve(item_id=first[-1].response.output[0].id)
        kept = (await events.until("conversation.item.retrieved"))[-1].item
    # The filler is said verbatim, in voice, by voxgate (the upstream's model did not say it).
    assert filler.strip() == "Hold on, I am looking."
    assert first[-1].response.metadata == {"voxgate": "filler"}
    assert any(e.type == "response.output_audio.delta" for e in first)
    assert "sunny and 21 degrees in Oslo" in said
    assert kept.content[0].text == "Hold on, I am looking."
    # The upstream's model answered knowing what had been said meanwhile.
    said_before = [m for m in model.requests[-1]["messages"] if m["role"] == "assistant"]
    assert any("Hold on, I am looking." in str(m.get("content")) for m in said_before)
