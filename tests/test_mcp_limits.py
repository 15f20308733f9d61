"""The server tools' guardrails on MCP calls: per-session call counts and concurrency, the
call time-out, and approval requests that expire or are cut by a barge-in. A real MCP
server (the `mcp` SDK over streamable HTTP) records what reaches it, so each guardrail is
judged by the calls it never received. Limits run end to end through a voxgate server and
the official `openai` SDK; expiry and barge-in run a session on virtual time (the 60 s
expiry passes without waiting for it)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from _mcp_server import McpTestServer
from _realtime import Events
from conftest import RunningServer, validated
from test_mcp_tools import (
    ask,
    ask_only,
    call,
    connected,
    say,
    scripted_server,
    tool_audit,
    tool_messages,
)
from test_tools_session import Playout
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script, tool_call_script
from voxgate.protocol.commands import ToolApproval
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.mcp import McpServer
from voxgate.protocol.mcp_items import McpApprovalRequest
from voxgate.session.clock import VirtualClock
from voxgate.session.engines import EngineSet
from voxgate.session.mcp_approvals import McpApprovals
from voxgate.session.testing import MemoryTransport, RunningSession, running_session
from voxgate.settings import Settings


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    server = McpTestServer().start()
    yield server
    if server.gate is not None:
        server.gate.set()  # a call still held must not outlive the test
    server.stop()


def operator(url: str, **fields: Any) -> dict[str, Any]:
    return {"server_label": "crm", "server_url": url, "require_approval": "never", **fields}


def mcp_call(turn: list[Any]) -> Any:
    return next(o for o in turn[-1].response.output if o.type == "mcp_call")


async def audit_of(server: RunningServer, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        got = await http.get("/admin/audit", params={"action": "tool", "session_id": session_id})
    return sorted(got.json()["data"], key=lambda r: r["at"])


@asynccontextmanager
async def text_session(server: RunningServer) -> AsyncIterator[tuple[Any, Events, str]]:
    """A text-only session on `server` once the operator MCP server's tools are listed; yields
    the connection, its events and the session id."""
    async with connected(server) as (conn, events, created):
        await events.until("conversation.item.done")  # the operator server's listing
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await events.until("session.updated")
        yield conn, events, created.session.id


# -- limits, end to end ---------------------------------------------------------------------


async def test_calls_past_max_calls_per_session_never_reach_the_server(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    with scripted_server(
        start_server,
        [
            call("get_weather", {"city": "Paris"}),
            say("Sunny in Paris."),
            call("get_weather", {"city": "Oslo"}),
            say("I cannot look that up any more."),
            call("delete_account", {"account_id": "42"}),
            say("I cannot do that now."),
        ],
        mcp_servers=[
            operator(
                mcp_server.url,
                max_calls_per_session=1,
                require_approval={"never": {"read_only": True}},
            )
        ],
    ) as (llm, server):
        async with text_session(server) as (conn, events, sid):
            assert mcp_call(await ask(conn, events, "Weather in Paris?")).output is not None

            turn = await ask(conn, events, "And in Oslo?")
            refused = mcp_call(turn)
            assert refused.error is not None and refused.output is None
            assert "at most 1 times" in refused.error.message
            assert "max_calls_per_session" in refused.error.message
            assert "response.mcp_call.failed" in [e.type for e in turn]
            # The model reads why, and says so.
            assert "at most 1 times" in tool_messages(llm.requests[3])[-1]

            # A call that would need approval is refused before the user is asked.
            turn = await ask(conn, events, "Delete account 42.")
            assert "at most 1 times" in (mcp_call(turn).error.message or "")
            assert not any(o.type == "mcp_approval_request" for o in turn[-1].response.output)
        assert mcp_server.named("get_weather") == [{"city": "Paris"}]
        assert mcp_server.named("delete_account") == []
        records = await audit_of(server, sid)
        assert [(r["code"], r["detail"].get("guardrail")) for r in records] == [
            ("ran", None),
            ("refused", "call_limit"),
            ("refused", "call_limit"),
        ]
        assert "max_calls_per_session" in records[1]["detail"]["message"]


async def test_a_call_past_max_concurrent_is_refused_while_a_write_still_runs(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    mcp_server.gate = threading.Event()  # slow_refund runs until the test lets it finish
    with scripted_server(
        start_server,
        [
            call("slow_refund", {"order": "9"}),
            call("slow_refund", {"order": "10"}),
            say("Another refund is still running; try again in a moment."),
        ],
        mcp_servers=[operator(mcp_server.url, max_concurrent=1)],
    ) as (llm, server):
        async with text_session(server) as (conn, events, sid):
            # A write, once started, outlives its cancelled response (and holds its slot).
            await ask_only(conn, events, "Refund order 9.")
            await events.until("response.mcp_call.in_progress")
            await conn.response.cancel()
            assert (await events.until("response.done"))[-1].response.status == "cancelled"

            turn = await ask(conn, events, "Refund order 10.")
            refused = mcp_call(turn)
            assert refused.error is not None and "max_concurrent" in refused.error.message
            assert "max_concurrent" in tool_messages(llm.requests[-1])[-1]
            mcp_server.gate.set()
            finished = await tool_audit(server, sid, "completed")
        assert finished["detail"]["arguments"] == {"order": "9"}
        assert mcp_server.named("slow_refund") == [{"order": "9"}]
        codes = [(r["code"], r["detail"].get("guardrail")) for r in await audit_of(server, sid)]
        assert ("refused", "concurrency_limit") in codes


async def test_a_call_past_its_timeout_fails_with_a_clear_error(
    start_server: Any, mcp_server: McpTestServer
) -> None:
    mcp_server.gate = threading.Event()  # slow_lookup never answers in time
    with scripted_server(
        start_server,
        [call("slow_lookup", {"order": "7"}), say("The archive did not answer.")],
        mcp_servers=[operator(mcp_server.url, timeout_s=2)],
    ) as (llm, server):
        async with text_session(server) as (conn, events, sid):
            turn = await ask(conn, events, "Where is order 7?")
        failed = mcp_call(turn)
        assert failed.output is None and failed.error is not None
        assert (failed.error.type, failed.error.code) == ("protocol_error", -32001)
        assert "within 2 s" in failed.error.message
        assert "within 2 s" in tool_messages(llm.requests[1])[-1]
        record = await tool_audit(server, sid, "timeout")
        assert record["code"] == "ran" and record["detail"]["error"] == "protocol_error"
        assert mcp_server.named("slow_lookup") == [{"order": "7"}]


def test_limits_are_checked_when_the_settings_load() -> None:
    base = {"server_label": "crm", "server_url": "https://mcp.example.com/mcp"}
    for bad in ({"max_calls_per_session": 0}, {"max_concurrent": 0}, {"timeout_s": 0}):
        with pytest.raises(ValidationError) as raised:
            Settings(mcp_servers=[{**base, **bad}])
        assert next(iter(bad)) in str(raised.value)


# -- approvals on virtual time -------------------------------------------------------------

ASK = [
    *text_script("I can delete account 42 once you approve.")[:-1],
    *tool_call_script("delete_account", {"account_id": "42"}),
]


def entry(url: str) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "crm", "server_url": url}


async def asked(running: RunningSession, url: str, modality: str) -> dict[str, Any]:
    """List the server, ask to delete account 42; returns the approval request item."""
    transport = running.transport
    session = {"type": "realtime", "output_modalities": [modality], "tools": [entry(url)]}
    transport.send_event({"type": "session.update", "session": session})
    await transport.events_until(
        lambda e: e["type"] == "conversation.item.done" and e["item"]["type"] == "mcp_list_tools"
    )
    text = {"type": "input_text", "text": "Delete account 42."}
    message = {"type": "message", "role": "user", "content": [text]}
    transport.send_event({"type": "conversation.item.create", "item": message})
    transport.send_event({"type": "response.create"})
    done = (await transport.events_until("response.done"))[-1]
    request: dict[str, Any] = done["response"]["output"][-1]
    assert request["type"] == "mcp_approval_request"
    return request


async def answer_late(running: RunningSession, request_id: str) -> dict[str, Any]:
    """The user approves after all: the error event the client gets."""
    approval = {
        "type": "mcp_approval_response",
        "approval_request_id": request_id,
        "approve": True,
    }
    running.transport.send_event({"type": "conversation.item.create", "item": approval})
    error: dict[str, Any] = (await running.transport.events_until("error"))[-1]["error"]
    running.transport.send_event({"type": "response.create"})
    await running.transport.events_until("response.done")
    return error


def server_answer(request_id: str) -> Any:
    return lambda e: (
        e["type"] == "conversation.item.added"
        and e["item"]["type"] == "mcp_approval_response"
        and e["item"]["approval_request_id"] == request_id
    )


async def test_an_unanswered_approval_request_expires_and_a_late_yes_runs_nothing(
    mcp_server: McpTestServer,
) -> None:
    records: list[dict[str, Any]] = []
    engines = EngineSet(
        llm=ScriptedLLM([ASK, text_script("Nothing was deleted.")]), tts=ScriptedTTS()
    )
    transport = MemoryTransport(validate=validated)
    async with running_session(engines, transport=transport) as running:
        running.session.mcp.audit = records.append
        request = await asked(running, mcp_server.url, "text")
        await running.clock.advance(59)
        assert [r["decision"] for r in records] == ["awaiting_confirmation"]
        await running.clock.advance(2)
        seen = await transport.events_until(server_answer(request["id"]))
        assert (seen[-1]["item"]["approve"], seen[-1]["item"]["reason"]) == (False, "expired")
        error = await answer_late(running, request["id"])
    assert error["code"] == "approval_expired"
    assert "within 60 s" in error["message"] and "will not run" in error["message"]
    assert mcp_server.named("delete_account") == []
    assert [(r["decision"], r.get("channel")) for r in records] == [
        ("awaiting_confirmation", None),
        ("expired", "timer"),
    ]
    assert records[0]["arguments"] == {"account_id": "42"}
    assert records[0]["summary"] == "delete account: account id 42"


async def test_a_barge_in_into_the_request_cancels_it(mcp_server: McpTestServer) -> None:
    records: list[dict[str, Any]] = []
    engines = EngineSet(
        llm=ScriptedLLM([ASK, text_script("Nothing was deleted.")]), tts=ScriptedTTS()
    )
    transport = MemoryTransport(validate=validated)
    async with running_session(engines, transport=transport, playout=Playout()) as running:
        running.session.mcp.audit = records.append
        request = await asked(running, mcp_server.url, "audio")
        # The question is still playing when the user talks over it.
        transport.send_event({"type": "output_audio_buffer.clear"})
        seen = await transport.events_until(server_answer(request["id"]))
        assert (seen[-1]["item"]["approve"], seen[-1]["item"]["reason"]) == (False, "interrupted")
        error = await answer_late(running, request["id"])
        # The expiry that was pending finds nothing left to cancel.
        await running.clock.advance(61)
    assert error["code"] == "approval_cancelled"
    assert "interrupted" in error["message"]
    assert mcp_server.named("delete_account") == []
    assert [(r["decision"], r.get("channel")) for r in records] == [
        ("awaiting_confirmation", None),
        ("interrupted", "barge_in"),
    ]


async def test_an_answer_in_time_is_recorded_once_and_the_expiry_does_not_undo_it(
    mcp_server: McpTestServer,
) -> None:
    records: list[dict[str, Any]] = []
    scripts = [ASK, text_script("Account 42 is gone."), text_script("Anything else?")]
    engines = EngineSet(llm=ScriptedLLM(scripts), tts=ScriptedTTS())
    async with running_session(engines) as running:
        running.session.mcp.audit = records.append
        request = await asked(running, mcp_server.url, "text")
        await running.clock.advance(30)
        approval = {
            "type": "mcp_approval_response",
            "approval_request_id": request["id"],
            "approve": True,
            "reason": "the user said so",
        }
        running.transport.send_event({"type": "conversation.item.create", "item": approval})
        running.transport.send_event({"type": "response.create"})
        done = (await running.transport.events_until("response.done"))[-1]
        await running.clock.advance(60)
        running.transport.send_event({"type": "response.create"})
        later = await running.transport.events_until("response.done")
    ran = next(o for o in done["response"]["output"] if o["type"] == "mcp_call")
    assert ran["output"] == "Account 42 deleted"
    assert not any(server_answer(request["id"])(e) for e in later)
    assert mcp_server.named("delete_account") == [{"account_id": "42"}]
    assert [(r["decision"], r.get("channel")) for r in records] == [
        ("awaiting_confirmation", None),
        ("approved", "event"),
        ("ran", None),
    ]
    assert records[1]["words"] == "the user said so"
    assert records[2]["approval_request_id"] == request["id"]


async def test_an_answer_after_the_expiry_is_refused_even_before_the_request_lapsed() -> None:
    """The expiry's cancellation is queued behind the client's answer (a busy session): the
    answer is still too late, and nothing runs."""
    records: list[dict[str, Any]] = []
    held: list[Any] = []

    async def post(progress: Any) -> None:
        held.append(progress)  # not applied yet: the answer is handled first

    def record(label: str, tool: str, arguments: str, sensitive: Any, **detail: Any) -> None:
        records.append({"tool": tool, **detail})

    clock, conn = VirtualClock(), RealtimeConnection()
    approvals = McpApprovals(record, clock)
    request = McpApprovalRequest(
        id="mcpr_1", server_label="crm", name="delete_account", arguments='{"account_id": "42"}'
    )
    conn.conversation.insert(request)
    approvals.asked(McpServer("crm", "https://mcp.example.com/mcp"), request, "resp_1", post)
    await asyncio.sleep(0)  # the expiry timer starts
    await clock.advance(60)
    assert len(held) == 1
    out = approvals.approval(conn, ToolApproval("item_1", "mcpr_1", approve=True))
    [error] = [json.loads(o.to_json()) for o in out]
    assert (error["type"], error["error"]["code"]) == ("error", "approval_expired")
    assert "mcpr_1" in conn.mcp.answered  # the next response will not run it
    assert held[0](conn) == []  # the queued cancellation finds it settled
    assert [(r["decision"], r.get("channel")) for r in records] == [
        ("awaiting_confirmation", None),
        ("expired", "event"),
    ]
