"""A real MCP server (the `mcp` SDK's MCPServer over streamable HTTP) on 127.0.0.1, in a
thread, whose tools record every call they receive, and which records the headers of every
HTTP request: the tool service of the MCP tests."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from conftest import free_port


class McpTestServer:
    def __init__(self, port: int | None = None, status: int | None = None) -> None:
        """``status``: answer every request with this HTTP error instead (a refusing server)."""
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.port = port or free_port()
        self.slow_s = 1.5
        # When set by a test, the slow tools wait for it instead of slow_s.
        self.gate: threading.Event | None = None
        # Set when slow_refund has finished its work.
        self.finished = threading.Event()
        mcp = MCPServer("crm")

        async def pause() -> None:
            gate = self.gate
            if gate is None:
                await asyncio.sleep(self.slow_s)
            else:
                await asyncio.to_thread(gate.wait, 30)

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        def get_weather(city: str) -> str:
            """The weather in a city."""
            self.calls.append(("get_weather", {"city": city}))
            return f"Sunny and 21 degrees in {city}"

        @mcp.tool(annotations=ToolAnnotations(destructiveHint=True))
        def delete_account(account_id: str) -> str:
            """Delete a customer account for good."""
            self.calls.append(("delete_account", {"account_id": account_id}))
            return f"Account {account_id} deleted"

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        async def slow_lookup(order: str) -> str:
            """Look up an order in the slow archive."""
            self.calls.append(("slow_lookup", {"order": order}))
            await pause()
            return f"Order {order} shipped"

        @mcp.tool(annotations=ToolAnnotations(destructiveHint=True))
        async def slow_refund(order: str) -> str:
            """Refund an order (slowly)."""
            self.calls.append(("slow_refund", {"order": order}))
            await pause()
            self.finished.set()
            return f"Order {order} refunded"

        @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
        def big_report() -> str:
            """The whole report."""
            self.calls.append(("big_report", {}))
            return "x" * 100_000

        @mcp.tool()
        def export_all_customers() -> str:
            """Export every customer record."""
            self.calls.append(("export_all_customers", {}))
            return "everything"

        app = mcp.streamable_http_app()

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
                if status is not None:
                    await send({"type": "http.response.start", "status": status, "headers": []})
                    await send({"type": "http.response.body", "body": b"no"})
                    return
            await app(scope, receive, send)

        # Held streams (voxgate keeps its connection) are cut at once when the server stops.
        config = uvicorn.Config(
            recording,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=0.5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="mcp-test-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def named(self, tool: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == tool]

    def start(self) -> McpTestServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("MCP test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
