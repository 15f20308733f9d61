"""Bounds on HTTP requests, so that no client can hold the server with a slow or huge one.

- `BodyLimits` (ASGI middleware): a request whose ``Content-Length`` is over its route's limit
  gets 413 before a byte of the body is read; a chunked body is counted as it arrives and cut
  off the same way; a body that stalls for ``body_timeout_s`` between chunks gets 408. A client
  that goes away mid-upload is logged as one line, not a traceback.
- `header_timeout_protocol`: uvicorn's HTTP protocol with a deadline for the request line and
  headers; a connection that has not sent them within ``header_timeout_s`` is closed (uvicorn
  itself waits for ever).

Errors have the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class RequestRefused(Exception):
    """Raised from ``receive`` when a body is too large or stalls; the middleware answers."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class BodyLimits:
    app: ASGIApp
    max_body_bytes: int = 1024 * 1024
    # Tighter limits for some routes (path prefix → bytes).
    route_limits: dict[str, int] = field(default_factory=dict)
    body_timeout_s: float = 30.0

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.route_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _error(send, 413, _too_large(declared, limit), "request_too_large")
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._bounded(receive, limit), send_tracking)
        except RequestRefused as exc:
            log.info("%s %s refused: %s", scope["method"], scope["path"], exc.message)
            if not started:
                await _error(send, exc.status, exc.message, exc.code)
        except ClientDisconnect:
            log.info("%s %s: the client went away mid-request", scope["method"], scope["path"])

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestRefused(
                    408,
                    f"The request body stalled for {self.body_timeout_s:g} s; send it in one go.",
                    "request_timeout",
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestRefused(413, _too_large(seen, limit), "request_too_large")
            return message

        return bounded


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(size: int, limit: int) -> str:
    return f"The request body is {size} bytes or more; this endpoint accepts at most {limit}."


async def _error(send: Send, status: int, message: str, code: str) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The unread body stays unread: the connection is closed rather than kept alive.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing connections that do not finish their request
    line and headers within ``header_timeout_s`` of connecting (or of starting a request)."""
    # Imported here: only the server process needs it (uvicorn[standard] brings httptools).
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            log.info("closed a connection that sent no complete headers in %g s", header_timeout_s)
            self.transport.close()

    return HeaderTimeoutProtocol


def uvicorn_options(header_timeout_s: float) -> dict[str, Any]:
    """Options for ``uvicorn.run`` / ``uvicorn.Config`` that apply these bounds."""
    return {"http": header_timeout_protocol(header_timeout_s)}
