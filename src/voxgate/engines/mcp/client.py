"""Listing and calling an MCP server's tools over streamable HTTP (the ``mcp`` SDK).

A session holds one connection per server (`McpConnection`): opened by the listing, kept for
the calls (a new connection per call costs about ten times the call itself: bench/
mcp_calls.py), closed with the session. The SDK's task groups must be entered and left by
one task, so a task of the connection's own holds it open while callers use it; a connection
that broke (the server restarted) is opened again by the next operation.

Failures come back in the three shapes the hosted API reports on an ``mcp_call``:
``http_error`` (the server answered with an HTTP error status), ``protocol_error`` (no
answer, a time-out, or an MCP/JSON-RPC error; ``code`` is the JSON-RPC code, -32000 when the
server could not be reached, -32001 on a time-out) and ``tool_execution_error`` (the tool
ran and reported an error).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from ...protocol.mcp import McpServer
from ...protocol.mcp_items import McpListedTool, McpToolError

UNREACHABLE = -32000
TIMED_OUT = -32001
T = TypeVar("T")
MAX_PAGES = 20  # tools/list pages followed before giving up on a server that never ends


class McpFailure(Exception):
    """An operation on an MCP server failed; ``error`` is what the item reports."""

    def __init__(self, error: McpToolError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class CallResult:
    output: str | None = None
    error: McpToolError | None = None


@asynccontextmanager
async def _connect(server: McpServer, refused: list[int]) -> AsyncIterator[Client]:
    """A connected client; HTTP error statuses the server answers with go to ``refused``
    (the SDK reports them as a generic JSON-RPC error, and the status is what helps)."""
    # The read timeout is the SDK's (the optional GET stream may be quiet for long); each
    # operation has its own time-out (McpConnection._guarded).
    timeout = httpx2.Timeout(server.timeout_s, read=300.0)
    http = create_mcp_http_client(headers=dict(server.headers), timeout=timeout)

    async def note(response: httpx2.Response) -> None:
        # Only answers to requests: a server without the optional GET stream says 405.
        if response.status_code >= 400 and response.request.method == "POST":
            refused.append(response.status_code)

    http.event_hooks["response"].append(note)
    async with http:
        transport = streamable_http_client(server.url, http_client=http)
        async with Client(transport, mode="legacy", read_timeout_seconds=server.timeout_s) as c:
            yield c


class McpConnection:
    """One session's connection to one server."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self._client: asyncio.Future[Client] | None = None
        self._holder: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        # HTTP error statuses answered to this connection's requests (see _connect).
        self._refused: list[int] = []

    async def list_tools(self) -> list[McpListedTool]:
        """Every tool the server has (the caller filters what is offered); raises McpFailure."""

        async def run(c: Client) -> list[McpListedTool]:
            tools: list[McpListedTool] = []
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await c.list_tools(cursor=cursor)
                tools += [_tool(t.model_dump(mode="json", by_alias=True)) for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        return await self._guarded(run)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallResult:
        """Run one tool; a failure of any kind is in the result, never raised."""

        async def run(c: Client) -> CallResult:
            result = await c.call_tool(name, arguments)
            text = _text(result.model_dump(mode="json", by_alias=True))
            if result.is_error:
                return CallResult(error=McpToolError(type="tool_execution_error", message=text))
            return CallResult(output=text)

        try:
            return await self._guarded(run)
        except McpFailure as exc:
            return CallResult(error=exc.error)

    def close(self) -> None:
        """Close the connection (idempotent; its task ends the MCP session)."""
        self._closing.set()
        self._client = None

    async def _connected(self) -> Client:
        holder = self._holder
        if self._client is None or holder is None or holder.done():
            # Each holder has its own event: closing this one never reaches a later one.
            self._closing = closing = asyncio.Event()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._client = ready
            self._holder = asyncio.create_task(
                self._hold(ready, closing), name=f"mcp:{self.server.label}"
            )
        return await asyncio.shield(self._client)

    async def _hold(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        try:
            async with _connect(self.server, self._refused) as c:
                ready.set_result(c)
                await closing.wait()
        except Exception as exc:  # reported to whoever waits for the connection, or dropped
            if not ready.done():
                ready.set_exception(exc)
        finally:
            if not ready.done():  # closed (or cancelled) before it was ever up
                ready.set_exception(ConnectionError("the connection was closed"))

    async def _guarded(self, work: Callable[[Client], Awaitable[T]]) -> T:
        server = self.server
        self._refused.clear()
        try:
            async with asyncio.timeout(server.timeout_s):
                return await work(await self._connected())
        except TimeoutError:
            self.close()  # a hung connection is not used again
            raise McpFailure(
                McpToolError(
                    type="protocol_error",
                    code=TIMED_OUT,
                    message=f"no answer from {server.url} within {server.timeout_s:g} s",
                )
            ) from None
        except Exception as exc:
            self.close()  # the next operation connects again
            if self._refused:
                status = self._refused[-1]
                message = f"{server.url} answered HTTP {status}"
                error = McpToolError(type="http_error", code=status, message=message)
                raise McpFailure(error) from None
            raise McpFailure(_classify(_root(exc), server.url)) from None


def _root(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _classify(exc: BaseException, url: str) -> McpToolError:
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return McpToolError(type="http_error", code=status, message=f"{url} answered HTTP {status}")
    if isinstance(exc, MCPError):
        return McpToolError(type="protocol_error", code=exc.error.code, message=exc.error.message)
    if isinstance(exc, httpx2.TimeoutException):
        return McpToolError(type="protocol_error", code=TIMED_OUT, message=f"{url} timed out")
    if isinstance(exc, httpx2.HTTPError):
        reason = str(exc) or type(exc).__name__
        return McpToolError(
            type="protocol_error", code=UNREACHABLE, message=f"cannot reach {url}: {reason}"
        )
    reason = str(exc) or type(exc).__name__
    return McpToolError(type="protocol_error", code=UNREACHABLE, message=f"{url}: {reason}")


def _tool(raw: dict[str, Any]) -> McpListedTool:
    return McpListedTool(
        name=raw["name"],
        description=raw.get("description") or None,
        input_schema=raw.get("inputSchema") or {"type": "object", "properties": {}},
        # Hints the server left unset are left out, not shown as nulls.
        annotations={k: v for k, v in (raw.get("annotations") or {}).items() if v is not None}
        or None,
    )


def _text(result: dict[str, Any]) -> str:
    """A call result as the text the model reads: its text parts, else its structured
    content as JSON."""
    parts = [c["text"] for c in result.get("content") or [] if c.get("type") == "text"]
    if parts:
        return "\n".join(parts)
    return json.dumps(result.get("structuredContent") or {})
