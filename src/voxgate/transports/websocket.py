"""The Realtime API over WebSocket: handshake details and a `Transport` over Starlette's
WebSocket. No business logic lives here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..session.transport import TransportClosed, TransportStalled

INSECURE_KEY_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the client said when it connected."""

    credential: str | None
    offered_protocols: tuple[str, ...]
    beta: bool

    @property
    def subprotocol(self) -> str | None:
        # Browsers abort unless the server picks one of the protocols they offered.
        return "realtime" if "realtime" in self.offered_protocols else None


def bearer_credential(authorization: str) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, if there is one."""
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def read_handshake(ws: WebSocket) -> Handshake:
    offered = tuple(
        p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
    )
    credential = bearer_credential(ws.headers.get("authorization", ""))
    for token in offered:
        if token.startswith(INSECURE_KEY_PREFIX):
            credential = credential or token[len(INSECURE_KEY_PREFIX) :]
    beta = "realtime=v1" in ws.headers.get("openai-beta", "") or (
        "openai-beta.realtime-v1" in offered
    )
    return Handshake(credential, offered, beta)


# A send that cannot hand its frame to the socket within this long means the client stopped
# reading (the socket's write buffer is full): the session ends instead of waiting forever.
SEND_TIMEOUT_S = 20.0


class WebSocketTransport:
    def __init__(self, ws: WebSocket, *, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        self.ws = ws
        self.send_timeout_s = send_timeout_s

    async def receive(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"client closed ({message.get('code')})")
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        try:
            # A deadline per send costs a timer handle, not a task.
            async with asyncio.timeout(self.send_timeout_s):
                await self.ws.send_text(text)
        except TimeoutError:
            raise TransportStalled(
                f"the client read nothing for {self.send_timeout_s:g} s"
            ) from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise TransportClosed(str(exc)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            await self.ws.close(code, reason[:120])
