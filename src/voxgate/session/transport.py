"""What a session needs from a transport (WebSocket, WebRTC data channel, …)."""

from __future__ import annotations

from typing import Protocol


class TransportClosed(Exception):
    """The peer went away; the session ends."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next client frame; raises TransportClosed when the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one server event (JSON text); raises TransportClosed when the peer is gone."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...
