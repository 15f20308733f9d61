"""voxgate's MCP connection against a real MCP server (the `mcp` SDK over streamable HTTP):
results and each kind of failure in the shapes an `mcp_call` item reports, and a connection
that outlives a server restart."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from _mcp_server import McpTestServer
from voxgate.engines.mcp.client import TIMED_OUT, UNREACHABLE, McpConnection, McpFailure
from voxgate.protocol.mcp import McpServer


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    server = McpTestServer().start()
    yield server
    server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


async def test_lists_and_calls_with_results_and_tool_errors(mcp_server: McpTestServer) -> None:
    conn = McpConnection(McpServer("crm", mcp_server.url))
    try:
        tools = {t.name: t for t in await conn.list_tools()}
        assert tools["get_weather"].annotations == {"readOnlyHint": True}
        assert tools["get_weather"].input_schema["required"] == ["city"]
        ok = await conn.call_tool("get_weather", {"city": "Rome"})
        assert (ok.output, ok.error) == ("Sunny and 21 degrees in Rome", None)
        bad = await conn.call_tool("get_weather", {})  # the server's own validation
        assert bad.output is None and bad.error is not None
        assert bad.error.type == "tool_execution_error" and "city" in bad.error.message
        unknown = await conn.call_tool("no_such_tool", {})
        assert unknown.error is not None and "no_such_tool" in unknown.error.message
    finally:
        conn.close()


async def test_an_http_refusal_is_an_http_error_with_its_status() -> None:
    refusing = McpTestServer(status=401).start()
    try:
        conn = McpConnection(McpServer("crm", refusing.url))
        with pytest.raises(McpFailure) as failed:
            await conn.list_tools()
        assert (failed.value.error.type, failed.value.error.code) == ("http_error", 401)
        result = await conn.call_tool("get_weather", {"city": "Rome"})
        assert result.error is not None and result.error.code == 401
    finally:
        refusing.stop()


async def test_unreachable_and_slow_servers_are_protocol_errors(mcp_server: McpTestServer) -> None:
    down = McpConnection(McpServer("crm", f"http://127.0.0.1:{closed_port()}/mcp"))
    result = await down.call_tool("get_weather", {"city": "Rome"})
    assert result.error is not None
    assert (result.error.type, result.error.code) == ("protocol_error", UNREACHABLE)
    # slow_lookup never answers; the timeout leaves a loaded machine room for the fresh
    # connection the next call makes.
    mcp_server.gate = threading.Event()
    slow = McpConnection(McpServer("crm", mcp_server.url, timeout_s=3))
    try:
        result = await slow.call_tool("slow_lookup", {"order": "1"})
        assert result.error is not None
        assert (result.error.type, result.error.code) == ("protocol_error", TIMED_OUT)
        # The timed-out connection is not reused; the next call works on a fresh one.
        ok = await slow.call_tool("get_weather", {"city": "Rome"})
        assert ok.output == "Sunny and 21 degrees in Rome"
    finally:
        mcp_server.gate.set()
        slow.close()


async def test_a_connection_survives_a_server_restart() -> None:
    first = McpTestServer().start()
    conn = McpConnection(McpServer("crm", first.url))
    try:
        assert (await conn.call_tool("get_weather", {"city": "Rome"})).error is None
        first.stop()
        failed = await conn.call_tool("get_weather", {"city": "Rome"})
        assert failed.error is not None  # said, not hung
        second = McpTestServer(port=first.port).start()
        try:
            again = await conn.call_tool("get_weather", {"city": "Oslo"})
            assert again.output == "Sunny and 21 degrees in Oslo"
            assert second.named("get_weather") == [{"city": "Oslo"}]
        finally:
            second.stop()
    finally:
        conn.close()
