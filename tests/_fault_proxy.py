"""A fault-injecting proxy in front of an upstream Realtime service: real TCP, HTTP/1.1 and
WebSocket framing, on its own thread and event loop so that sync and async tests alike can
switch its faults while traffic flows.

Faults (each applies from the moment it is set; `heal()` clears them):
- `refuse(status)`: new connections get that HTTP status (an OpenAI-shaped JSON error body)
  instead of reaching the upstream;
- `unreachable()`: nothing listens on the port any more (connections are refused by the OS);
- `drop_after(event_type, n)`: after forwarding the n-th server event of that type on a
  WebSocket, both sockets are cut without a close frame — the upstream vanishing mid-session;
- `stall_after(event_type, n)`: after that event, nothing more is forwarded from the upstream
  to the client, while both sockets stay open (client events still reach the upstream).

The proxy removes ``Sec-WebSocket-Extensions`` from upgrade requests so that no compression
is negotiated: it must read the server's events to find the one to fail after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

_REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


@dataclass
class _Fault:
    refuse: int | None = None
    after_type: str | None = None
    after_count: int = 1
    action: str = ""  # "drop" or "stall"


@dataclass
class FaultRecord:
    """What the proxy did: the kind of fault and the monotonic time it struck."""

    kind: str
    at: float
    event_type: str | None = None


@dataclass(eq=False)
class _Link:
    """One proxied connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    seen: dict[str, int] = field(default_factory=dict)
    stalled: bool = False


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._fault = _Fault()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self.faults: list[FaultRecord] = []
        self.connections = 0
        self.websockets = 0
        # Server event types forwarded to clients, in order (all connections).
        self.forwarded: list[str] = []
        self._fault_seen = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")
        self._thread.daemon = True
        self._thread.start()
        self._server: asyncio.Server | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._call(self._listen())

    # -- switches -------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def refuse(self, status: int) -> None:
        with self._lock:
            self._fault = _Fault(refuse=status)

    def drop_after(self, event_type: str, n: int = 1) -> None:
        with self._lock:
            self._fault = _Fault(after_type=event_type, after_count=n, action="drop")

    def stall_after(self, event_type: str, n: int = 1) -> None:
        with self._lock:
            self._fault = _Fault(after_type=event_type, after_count=n, action="stall")

    def unreachable(self) -> None:
        self._call(self._close_listener())

    def heal(self) -> None:
        """No more faults; listening again if it was unreachable. Stalled links stay stalled
        (their upstream session is lost to the client either way)."""
        with self._lock:
            self._fault = _Fault()
        if self._server is None:
            self._call(self._listen())

    def wait_fault(self, timeout: float = 10.0) -> FaultRecord:
        """Block until a fault strikes (or has struck); the first one recorded."""
        with self._fault_seen:
            if not self._fault_seen.wait_for(lambda: bool(self.faults), timeout):
                raise TimeoutError(f"no fault struck within {timeout} s")
            return self.faults[0]

    def close(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def _record(self, kind: str, event_type: str | None = None) -> None:
        with self._fault_seen:
            self.faults.append(FaultRecord(kind, time.monotonic(), event_type))
            self._fault_seen.notify_all()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self._record("unreachable")

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            _abort(link.client)
            if link.upstream is not None:
                _abort(link.upstream)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            with self._lock:
                refuse = self._fault.refuse
            if refuse is not None:
                await _refuse(writer, refuse)
                self._record(f"refused {refuse}")
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            link.upstream = up_writer
            upgrade = b"upgrade: websocket" in head.lower()
            up_writer.write(_without_extensions(head) if upgrade else head)
            await up_writer.drain()
            if upgrade:
                self.websockets += 1
            down: Callable[[], Coroutine[Any, Any, None]] = (
                (lambda: self._frames(up_reader, link))
                if upgrade
                else (lambda: _pipe(up_reader, writer))
            )
            await _race(_pipe(reader, up_writer), down())
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._links.discard(link)
            _abort(writer)
            if link.upstream is not None:
                _abort(link.upstream)

    async def _frames(self, up: asyncio.StreamReader, link: _Link) -> None:
        """Upstream → client after the upgrade: the 101 response as is, then frame by frame,
        watching text frames for the event to fail after."""
        link.client.write(await up.readuntil(b"\r\n\r\n"))
        message = bytearray()
        while True:
            header, payload = await _read_frame(up)
            opcode = header[0] & 0x0F
            if opcode in (0x1, 0x0) and not link.stalled:
                message += payload
            if link.stalled:
                continue  # swallowed: the client hears nothing more from the upstream
            link.client.write(header + payload)
            await link.client.drain()
            if opcode in (0x1, 0x0) and header[0] & 0x80:
                event_type = _event_type(bytes(message))
                message.clear()
                if event_type is not None and self._strike(link, event_type):
                    return

    def _strike(self, link: _Link, event_type: str) -> bool:
        """Count a forwarded event; apply a drop or stall if it is the one. True: dropped."""
        self.forwarded.append(event_type)
        link.seen[event_type] = link.seen.get(event_type, 0) + 1
        with self._lock:
            fault = self._fault
        if fault.after_type != event_type or link.seen[event_type] < fault.after_count:
            return False
        if fault.action == "stall":
            link.stalled = True
            self._record("stall", event_type)
            return False
        self._record("drop", event_type)
        _abort(link.client)
        if link.upstream is not None:
            _abort(link.upstream)
        return True


# -- helpers ----------------------------------------------------------------------------------


async def _refuse(writer: asyncio.StreamWriter, status: int) -> None:
    body = json.dumps(
        {
            "error": {
                "type": "invalid_request_error" if status < 500 else "server_error",
                "code": f"http_{status}",
                "message": f"Refused by the fault proxy with HTTP {status}.",
                "param": None,
            }
        }
    ).encode()
    reason = _REASONS.get(status, "Service Unavailable" if status >= 500 else "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _without_extensions(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"sec-websocket-extensions:")]
    return b"\r\n".join(kept)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(2)
    length = header[1] & 0x7F
    if length == 126:
        header += await reader.readexactly(2)
        length = int.from_bytes(header[2:4], "big")
    elif length == 127:
        header += await reader.readexactly(8)
        length = int.from_bytes(header[2:10], "big")
    if header[1] & 0x80:  # masked (never from a server, but keep the bytes right)
        header += await reader.readexactly(4)
    return header, await reader.readexactly(length)


def _event_type(message: bytes) -> str | None:
    try:
        event = json.loads(message)
    except ValueError:
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _race(*work: Coroutine[Any, Any, None]) -> None:
    """Run both directions until either ends (a peer closed), then stop the other."""
    tasks = [asyncio.create_task(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError)
            ):
                raise result


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
