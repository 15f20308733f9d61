"""Server tools end to end: the official `openai` SDK as the client, a scripted
OpenAI-compatible model (real HTTP) and a recording HTTP tool service started here. Every
server event is validated against the SDK's types (`Events`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from _realtime import Events
from _tool_model import Model
from _tool_service import ToolService
from conftest import RunningServer, SlowChatServer, free_port
from voxgate.settings import Settings

ADMIN_KEY = "sk-static-admin-key-for-tool-tests"
SECRET = "tool-signing-secret-for-tests"
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
ACCOUNT = {
    "type": "object",
    "properties": {"account_id": {"type": "string"}, "pin": {"type": "string"}},
    "required": ["account_id"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def service() -> Iterator[ToolService]:
    svc = ToolService(SECRET, slow_s=1.5)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def model() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.03)
    yield server
    server.stop()


def tools(service: ToolService) -> list[dict[str, Any]]:
    http = {"kind": "http", "timeout_s": 10}
    return [
        {
            **http,
            "name": "get_weather",
            "description": "Weather for a city",
            "url": service.url("/weather"),
            "parameters": CITY,
        },
        {
            **http,
            "name": "slow_forecast",
            "description": "A slow forecast",
            "url": service.url("/slow"),
            "parameters": CITY,
            "filler": "Hold on, I am looking.",
        },
        {
            **http,
            "name": "delete_account",
            "description": "Delete an account",
            "url": service.url("/delete"),
            "parameters": ACCOUNT,
            "effect": "destructive",
            "sensitive_args": ["pin"],
        },
        {
            **http,
            "name": "close_account",
            "description": "Close an account",
            "url": service.url("/delete"),
            "parameters": ACCOUNT,
            "effect": "destructive",
            "confirm_expiry_s": 1.0,
        },
        {
            **http,
            "name": "wire_money",
            "description": "Send money",
            "url": service.url("/wire"),
            "effect": "write",
        },
        {
            "kind": "python",
            "name": "lookup_order",
            "target": "_tool_targets:lookup_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    ]


@pytest.fixture(scope="module")
def server(service: ToolService, model: SlowChatServer) -> Iterator[RunningServer]:
    settings = Settings(
        port=free_port(),
        api_keys=[ADMIN_KEY],
        llm_base_url=model.url,
        llm_model="scripted",
        tools=tools(service),
        tools_signing_secret=SECRET,
        policy={"allowed_tools": ["get_*", "slow_*", "delete_*", "close_*", "lookup_*"]},
    )
    running = RunningServer(settings, None)
    running.start()
    yield running
    running.stop()


@asynccontextmanager
async def session(
    server: RunningServer, **config: Any
) -> AsyncIterator[tuple[AsyncRealtimeConnection, Events]]:
    client = AsyncOpenAI(
        base_url=server.base_url,
        api_key=ADMIN_KEY,
        default_headers={"OpenAI-Safety-Identifier": "user-1"},
    )
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(session={"type": "realtime", **config})
        await events.expect("session.updated")
        yield conn, events


async def tell(conn: AsyncRealtimeConnection, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
    await conn.response.create()


def spoke(event: Any) -> bool:
    """A response.done whose output holds an assistant message (the model said something)."""
    return event.type == "response.done" and any(
        o.type == "message" for o in event.response.output or []
    )


async def answer(events: Events, wait_s: float = 30) -> tuple[list[Any], str]:
    """Events up to the next response that speaks, and what it said."""
    seen = await events.until(spoke, wait_s)
    message = next(o for o in seen[-1].response.output if o.type == "message")
    return seen, " ".join(part.transcript or part.text or "" for part in message.content)


def added(seen: list[Any], kind: str) -> list[Any]:
    return [e.item for e in seen if e.type == "conversation.item.added" and e.item.type == kind]


async def audit(server: RunningServer, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        reply = await http.get("/admin/audit", params={"kind": "tool", "session_id": session_id})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["data"])


# -- a read tool -----------------------------------------------------------------------------


async def test_read_tool_runs_and_its_result_is_spoken(
    server: RunningServer, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"weather": ("get_weather", {"city": "Paris"})})
    before = len(service.calls_to("/weather"))
    async with session(server) as (conn, events):
        sid = events.all[0].session.id
        await tell(conn, "What is the weather in Paris?")
        seen, said = await answer(events)
    assert "sunny and 21 degrees in Paris" in said
    assert len(service.calls_to("/weather")) == before + 1
    # The client saw the call and its output as conversation items, not as response output
    # it would have to execute.
    [call] = added(seen, "function_call")
    [output] = added(seen, "function_call_output")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert output.call_id == call.call_id and "sunny" in output.output
    assert not any(
        o.type == "function_call"
        for e in seen
        if e.type == "response.done"
        for o in e.response.output or []
    )
    # The model was offered the server tools the caller may use, and not the others.
    offered = {t["function"]["name"] for t in model.requests[-2]["tools"]}
    assert {"get_weather", "delete_account", "lookup_order"} <= offered
    assert "wire_money" not in offered
    [entry] = await audit(server, sid)
    assert entry["code"] == "ran" and entry["detail"]["tool"] == "get_weather"
    assert entry["detail"]["status"] == "ok" and entry["key_id"]
