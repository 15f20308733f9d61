"""MCP servers, end to end: a real MCP server (the `mcp` SDK over streamable HTTP), a
voxgate server with a scripted OpenAI-compatible LLM, and the official `openai` SDK as the
client. The server's tools record their calls, so each guardrail is judged by what reached
the MCP server. Every server event is validated against the SDK's own types (`Events`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _mcp_server import McpTestServer
from _realtime import Events, types
from _tool_model import answer_approval
from conftest import ChatChunk, RunningServer, SlowChatServer


def call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> list[ChatChunk]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    delta = {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": function}]}
    return [(delta, None), ({}, "tool_calls")]


def say(text: str) -> list[ChatChunk]:
    return [({"content": text}, "stop")]


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    server = McpTestServer().start()
    yield server
    server.stop()


@contextmanager
def scripted_server(
    start_server: Any, scripts: list[list[ChatChunk]], **settings: Any
) -> Iterator[tuple[SlowChatServer, RunningServer]]:
    """A voxgate server whose LLM is a scripted OpenAI-compatible model that answers with
    `scripts`, one a request; the model is stopped on exit."""
    llm = SlowChatServer(delay_s=0.0, scripts=scripts)
    try:
        yield llm, start_server(llm_base_url=llm.url, llm_model="scripted", **settings)
    finally:
        llm.stop()


@asynccontextmanager
async def connected(server: RunningServer) -> AsyncIterator[tuple[Any, Events, Any]]:
    """An `openai` SDK realtime connection to `server` (key sk-test); yields the connection,
    its events and the session.created event."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        yield conn, events, await events.expect("session.created")


def entry(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "crm", "server_url": url, **fields}


async def add_server(conn: Any, events: Events, tool: dict[str, Any]) -> list[Any]:
    """session.update with the MCP entry; returns the listing's events up to its item.done."""
    session = {"type": "realtime", "output_modalities": ["text"], "tools": [tool]}
    await conn.session.update(session=session)
    return await events.until(
        lambda e: e.type == "conversation.item.done" and e.item.type == "mcp_list_tools"
    )


async def ask_only(conn: Any, events: Events, text: str) -> None:
    """A user message, then response.create (its events are left to read)."""
    content = [{"type": "input_text", "text": text}]
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": content}
    )
    await events.until("conversation.item.done")
    await conn.response.create()


async def ask(conn: Any, events: Events, text: str) -> list[Any]:
    await ask_only(conn, events, text)
    return await events.until("response.done")


def output_text(turn: list[Any]) -> str:
    return "".join(e.text for e in turn if e.type == "response.output_text.done")


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_tools_are_listed_called_refused_and_approved(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    tool = entry(
        mcp_server.url,
        allowed_tools=["get_weather", "delete_account"],
        require_approval={"never": {"read_only": True}},
    )
    with scripted_server(
        start_server,
        [
            call("get_weather", {"city": "Paris"}),
            say("It is sunny in Paris."),
            call("export_all_customers", {}),
            say("I cannot export customers."),
            call("delete_account", {"account_id": "42"}),
            say("Account 42 is gone."),
            say("Anything else?"),
            call("delete_account", {"account_id": "43"}),
            say("I left account 43 alone."),
        ],
        policy={"allowed_mcp_servers": [mcp_server.url]},
    ) as (llm, server):
        async with connected(server) as (conn, events, created):
            session_id = created.session.id
            listing = await add_server(conn, events, tool)
            assert types(listing) == [
                "session.updated",
                "mcp_list_tools.in_progress",
                "conversation.item.added",
                "mcp_list_tools.completed",
                "conversation.item.done",
            ]
            listed = listing[-1].item
            assert listed.server_label == "crm"
            # Only what allowed_tools names is listed; export_all_customers is not.
            assert sorted(t.name for t in listed.tools) == ["delete_account", "get_weather"]
            assert listed.tools[0].input_schema["type"] == "object"

            # A read tool without approval runs, and the model answers with its result.
            turn = await ask(conn, events, "What is the weather in Paris?")
            assert "response.mcp_call_arguments.delta" in types(turn)
            assert [t for t in types(turn) if t.startswith("response.mcp_call.")] == [
                "response.mcp_call.in_progress",
                "response.mcp_call.completed",
            ]
            mcp_call = next(o for o in turn[-1].response.output if o.type == "mcp_call")
            assert mcp_call.name == "get_weather" and mcp_call.server_label == "crm"
            assert mcp_call.output == "Sunny and 21 degrees in Paris"
            assert mcp_server.named("get_weather") == [{"city": "Paris"}]
            assert output_text(turn) == "It is sunny in Paris."
            offered = sorted(t["function"]["name"] for t in llm.requests[0]["tools"])
            assert offered == ["delete_account", "get_weather"]
            assert tool_messages(llm.requests[1]) == ["Sunny and 21 degrees in Paris"]
            assert not any(e.type == "function_call" for e in turn[-1].response.output)

            # A tool outside allowed_tools, called anyway, never runs; the model is told.
            turn = await ask(conn, events, "Export all customers.")
            refused = next(o for o in turn[-1].response.output if o.type == "mcp_call")
            assert refused.error is not None and "not allowed" in refused.error.message
            assert "response.mcp_call.failed" in types(turn)
            assert "not allowed" in tool_messages(llm.requests[3])[-1]
            assert mcp_server.named("export_all_customers") == []

            # A tool needing approval waits for it: the response ends with the request.
            turn = await ask(conn, events, "Delete account 42.")
            request = turn[-1].response.output[-1]
            assert request.type == "mcp_approval_request" and request.name == "delete_account"
            assert json.loads(request.arguments) == {"account_id": "42"}
            assert mcp_server.named("delete_account") == []
            await answer_approval(conn, request.id, approve=True)
            await events.until("conversation.item.done")
            await conn.response.create()
            turn = await events.until("response.done")
            ran = next(o for o in turn[-1].response.output if o.type == "mcp_call")
            assert ran.approval_request_id == request.id
            assert ran.output == "Account 42 deleted"
            assert output_text(turn) == "Account 42 is gone."
            assert mcp_server.named("delete_account") == [{"account_id": "42"}]
            # The approval is spent: another response does not run the call again.
            await conn.response.create()
            await events.until("response.done")
            assert mcp_server.named("delete_account") == [{"account_id": "42"}]
            # …nor can the same request be approved twice.
            await answer_approval(conn, request.id, approve=True)
            error = (await events.until("error"))[-1]
            assert error.error.code == "approval_already_answered"

            # Denied: the call never reaches the server; the model hears it was declined.
            turn = await ask(conn, events, "Delete account 43.")
            request = turn[-1].response.output[-1]
            assert request.type == "mcp_approval_request"
            await answer_approval(conn, request.id, approve=False)
            await events.until("conversation.item.done")
            await conn.response.create()
            turn = await events.until("response.done")
            assert output_text(turn) == "I left account 43 alone."
            assert "declined" in tool_messages(llm.requests[-1])[-1]
            assert mcp_server.named("delete_account") == [{"account_id": "42"}]

        async with httpx.AsyncClient(base_url=server.base_url) as http:
            audit = (
                await http.get(
                    "/admin/audit",
                    params={"action": "tool"},
                    headers={"Authorization": "Bearer sk-test"},
                )
            ).json()
        decisions = sorted(
            (
                r["detail"]["tool"],
                r["code"],
                r["detail"].get("guardrail")
                or r["detail"].get("approved_by")
                or r["detail"].get("channel"),
            )
            for r in audit["data"]
            if r["session_id"] == session_id
        )
        # One record per decision, as for the server's own tools: an approved call leaves
        # awaiting_confirmation, approved and ran.
        assert decisions == [
            ("delete_account", "approved", "event"),
            ("delete_account", "awaiting_confirmation", None),
            ("delete_account", "awaiting_confirmation", None),
            ("delete_account", "declined", "event"),
            ("delete_account", "ran", "mcp_approval_response"),
            ("export_all_customers", "refused", "tool_not_allowed"),
            ("get_weather", "ran", None),
        ]


async def test_a_server_outside_allowed_mcp_servers_is_refused(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    server = start_server(policy={"allowed_mcp_servers": [mcp_server.url]})
    async with connected(server) as (conn, events, _):
        other = entry("http://127.0.0.1:9/mcp")
        await conn.session.update(session={"type": "realtime", "tools": [other]})
        error = await events.expect("error")
        assert error.error.code == "mcp_server_not_allowed"
        assert error.error.param == "session.tools[0].server_url"
        assert "allowed_mcp_servers" in error.error.message
    assert mcp_server.calls == []


async def test_an_unreachable_server_fails_its_listing_with_a_reason(start_server: Any) -> None:
    server = start_server()
    async with connected(server) as (conn, events, _):
        listing = await add_server(conn, events, entry("http://127.0.0.1:9/mcp"))
        assert "mcp_list_tools.failed" in types(listing)
        error = next(e for e in listing if e.type == "error")
        assert error.error.code == "mcp_list_tools_failed"
        assert "127.0.0.1:9" in error.error.message
        assert listing[-1].item.tools == []


async def test_operator_servers_serve_every_session(
    start_server: Any, mcp_server: McpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "s3cret-token")
    operator = {
        "server_label": "crm",
        "server_url": mcp_server.url,
        "headers": {"Authorization": "Bearer ${CRM_TOKEN}"},
        "allowed_tools": ["get_weather"],
        "require_approval": "never",
        "sensitive_args": ["city"],
    }
    with scripted_server(
        start_server,
        [call("get_weather", {"city": "Oslo"}), say("Sunny in Oslo.")],
        mcp_servers=[operator],
    ) as (llm, server):
        async with connected(server) as (conn, events, created):
            assert created.session.tools == []  # the operator's headers are never shown
            listing = await events.until("conversation.item.done")
            assert [t.name for t in listing[-1].item.tools] == ["get_weather"]
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await events.until("session.updated")
            turn = await ask(conn, events, "Weather in Oslo?")
            assert output_text(turn) == "Sunny in Oslo."
        assert mcp_server.named("get_weather") == [{"city": "Oslo"}]
        assert all(h.get("authorization") == "Bearer s3cret-token" for h in mcp_server.headers)
        # One MCP session for the listing and the call: the connection is held, not redone.
        assert len({h["mcp-session-id"] for h in mcp_server.headers if "mcp-session-id" in h}) == 1
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            got = await http.get("/admin/audit", params={"action": "tool"})
        (entry,) = [e for e in got.json()["data"] if e["session_id"] == created.session.id]
        assert entry["detail"]["arguments"] == {"city": "[redacted]"}
        assert "Oslo" not in json.dumps(entry)


async def test_invalid_arguments_never_reach_the_server(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    with scripted_server(
        start_server,
        [
            call("get_weather", {"town": "Paris"}),
            say("Which city?"),
            call("delete_account", {"account_id": 42}),
            say("That did not work."),
        ],
    ) as (llm, server):
        async with connected(server) as (conn, events, _):
            await add_server(conn, events, entry(mcp_server.url, require_approval="always"))
            for asked in ("Weather?", "Delete account 42."):
                turn = await ask(conn, events, asked)
                failed = next(o for o in turn[-1].response.output if o.type == "mcp_call")
                assert failed.error is not None and failed.error.type == "tool_execution_error"
                assert "Invalid arguments" in failed.error.message
                # Refused before approval: the user is never asked about a call that cannot run.
                assert not any(o.type == "mcp_approval_request" for o in turn[-1].response.output)
                assert "Invalid arguments" in tool_messages(llm.requests[-1])[-1]
        assert mcp_server.calls == []
        assert "'city' is a required property" in tool_messages(llm.requests[1])[-1]


@pytest.mark.parametrize("modality", ["text", "audio"])
async def test_a_slow_tool_gets_a_filler_then_the_answer(
    start_server: Any, mcp_server: McpTestServer, modality: str
) -> None:
    with scripted_server(
        start_server, [call("slow_lookup", {"order": "7"}), say("Order 7 has shipped.")]
    ) as (llm, server):
        async with connected(server) as (conn, events, _):
            tool = entry(mcp_server.url, require_approval="never")
            session = {"type": "realtime", "output_modalities": [modality], "tools": [tool]}
            await conn.session.update(session=session)
            await events.until(
                lambda e: e.type == "conversation.item.done" and e.item.type == "mcp_list_tools"
            )
            turn = await ask(conn, events, "Where is order 7?")
        words = (
            "response.output_text.delta"
            if modality == "text"
            else "response.output_audio_transcript.delta"
        )
        kinds = [e.type for e in turn if e.type in ("response.mcp_call.completed", words)]
        # The filler is said while the call runs; the answer comes after its result.
        assert kinds[0] == words
        assert "response.mcp_call.completed" in kinds[1:]
        said = "".join(
            getattr(e, "text", None) or getattr(e, "transcript", "")
            for e in turn
            if e.type in ("response.output_text.done", "response.output_audio_transcript.done")
        )
        assert " ".join(said.split()) == "One moment while I check that. Order 7 has shipped."
        if modality == "audio":
            assert any(e.type == "response.output_audio.delta" for e in turn)


async def tool_audit(server: RunningServer, session_id: str, status: str) -> dict[str, Any]:
    """The session's audit record of a call that ended with ``status`` (written when the
    call ends, which may be after the response did)."""
    async with asyncio.timeout(10), httpx.AsyncClient(base_url=server.base_url) as http:
        while True:
            got = await http.get(
                "/admin/audit", params={"action": "tool", "session_id": session_id}
            )
            found = [r for r in got.json()["data"] if r["detail"].get("status") == status]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("tool", "status"), [("slow_refund", "completed"), ("slow_lookup", "cancelled")]
)
async def test_a_cancelled_response_stops_a_read_call_but_not_a_write(
    start_server: Any, mcp_server: McpTestServer, tool: str, status: str
) -> None:
    with scripted_server(start_server, [call(tool, {"order": "9"}), say("Done.")]) as (llm, server):
        async with connected(server) as (conn, events, created):
            session_id = created.session.id
            await add_server(conn, events, entry(mcp_server.url, require_approval="never"))
            await ask_only(conn, events, "Refund order 9.")
            await events.until("response.mcp_call.in_progress")
            await conn.response.cancel()
            done = (await events.until("response.done"))[-1].response
            assert done.status == "cancelled"
            cut = next(o for o in done.output if o.type == "mcp_call")
            assert cut.error is not None and cut.output is None
            record = await tool_audit(server, session_id, status)
        assert record["detail"]["tool"] == tool
        if tool == "slow_refund":  # the write ran to its end on the server, once
            assert mcp_server.finished.is_set()
            assert mcp_server.named(tool) == [{"order": "9"}]
        assert len(llm.requests) == 1  # the model never continued the cancelled response


async def test_a_write_call_finishes_when_the_client_hangs_up(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    script = [call("slow_refund", {"order": "5"}), say("Done.")]
    with scripted_server(start_server, script) as (llm, server):
        async with connected(server) as (conn, events, created):
            session_id = created.session.id
            await add_server(conn, events, entry(mcp_server.url, require_approval="never"))
            await ask_only(conn, events, "Refund order 5.")
            await events.until("response.mcp_call.in_progress")
        # The session has ended; the refund it started still completes, and is audited.
        record = await tool_audit(server, session_id, "completed")
        assert record["detail"]["tool"] == "slow_refund"
        assert mcp_server.finished.is_set()
        assert mcp_server.named("slow_refund") == [{"order": "5"}]


async def test_a_huge_answer_is_cut_to_what_the_model_reads(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    script = [call("big_report", {}), say("It is long.")]
    with scripted_server(start_server, script) as (llm, server):
        async with connected(server) as (conn, events, _):
            await add_server(conn, events, entry(mcp_server.url, require_approval="never"))
            turn = await ask(conn, events, "Read me the report.")
        item = next(o for o in turn[-1].response.output if o.type == "mcp_call")
        assert item.output is not None and len(item.output) < 64_100
        assert item.output.endswith("[cut: the tool answered 100000 characters]")
        assert tool_messages(llm.requests[1]) == [item.output]
