"""The event transport of a session that has no event client: a phone call (SIP, Twilio).

The caller hears and speaks through the call's media; nobody reads server events on the
primary connection. `send` drops them (the session's sidebands and observer still see every
event: the session mirrors its outbox to sidebands before it sends), and `receive` waits until
the call is closed, so the session ends when the call does.
"""

from __future__ import annotations

import asyncio

from ..session.transport import TransportClosed


class HeadlessTransport:
    """A `Transport` with no peer. ``close`` (by the call or the session) ends it."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self.reason = ""
        self.close_code: int | None = None
        self.dropped = 0  # server events sent with nobody to read them

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def receive(self) -> str | bytes:
        await self._closed.wait()
        raise TransportClosed(self.reason or "the call ended")

    async def send(self, text: str) -> None:
        if self._closed.is_set():
            raise TransportClosed(self.reason or "the call ended")
        self.dropped += 1

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._closed.is_set():
            self.close_code, self.reason = code, reason
            self._closed.set()
