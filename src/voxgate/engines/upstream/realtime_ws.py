"""The OpenAI Realtime API over WebSocket as an upstream protocol (``websockets`` client).

The upstream's key goes in the ``Authorization`` header of this connection only; the end
user's safety identifier as ``OpenAI-Safety-Identifier``. The client's own logger is held
at WARNING: at DEBUG it would write the handshake's headers (the key) and every frame.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .base import Upstream, UpstreamClosed, UpstreamRefused, UpstreamUnreachable

log = logging.getLogger(__name__)
_wire_log = logging.getLogger("voxgate.upstream.wire")
_wire_log.setLevel(logging.WARNING)
OPEN_TIMEOUT_S = 10.0
# A session's close waits at most this long for the upstream to answer the close frame.
CLOSE_TIMEOUT_S = 2.0
# Largest upstream event accepted (a conversation.item.retrieved with audio stays under 8 MiB).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class RealtimeWebSocket:
    """`UpstreamProtocol` for Realtime-compatible services."""

    def __init__(self, open_timeout_s: float = OPEN_TIMEOUT_S) -> None:
        self.open_timeout_s = open_timeout_s

    async def connect(
        self, upstream: Upstream, model: str, *, safety_identifier: str | None = None
    ) -> _Connection:
        headers = dict(upstream.headers)
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        if safety_identifier:
            headers["OpenAI-Safety-Identifier"] = safety_identifier
        url = _with_model(upstream.url, model)
        where = f"upstream '{upstream.name}' ({_origin(upstream.url)})"
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self.open_timeout_s,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_EVENT_BYTES,
                # Audio in base64 barely compresses: deflate would cost CPU for nothing.
                compression=None,
                logger=_wire_log,
                user_agent_header="voxgate",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise UpstreamRefused(f"{where} refused the session (HTTP {status})", status) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise UpstreamUnreachable(f"{where} cannot be reached: {type(exc).__name__}") from None
        return _Connection(ws, where)


class _Connection:
    def __init__(self, ws: ClientConnection, where: str) -> None:
        self._ws = ws
        self._where = where

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def recv(self) -> str:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        return message if isinstance(message, str) else message.decode("utf-8", "replace")

    async def close(self) -> None:
        try:
            await self._ws.close()
        except Exception:  # the peer may be gone already; closing is best effort
            log.debug("closing the connection to %s failed", self._where, exc_info=True)

    def _closed(self, exc: ConnectionClosed) -> UpstreamClosed:
        frame = exc.rcvd
        code = frame.code if frame is not None else None
        why = f"code {code}" + (f", {frame.reason!r}" if frame is not None and frame.reason else "")
        if frame is None:
            why = "the connection dropped"
        return UpstreamClosed(f"{self._where} closed the session ({why})", code)


def _with_model(url: str, model: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}{urlencode({'model': model})}"


def _origin(url: str) -> str:
    """The scheme, host and path of ``url`` (no query: it could carry a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
