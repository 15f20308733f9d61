"""The registry of live sessions: admission, lookup and drain on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .inbox import Ended
from .session import Session

log = logging.getLogger(__name__)


class AdmissionRefused(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SessionManager:
    def __init__(self, *, max_sessions: int, on_release: Callable[[], None] | None = None) -> None:
        self.max_sessions = max_sessions
        # Called whenever a session leaves the registry (the server trims memory then).
        self._on_release = on_release
        self.sessions: dict[str, Session] = {}
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self) -> None:
        """Raise AdmissionRefused when a new session cannot start now."""
        if self._draining:
            raise AdmissionRefused(
                "The server is shutting down; reconnect in a moment.", "server_shutting_down"
            )
        if len(self.sessions) >= self.max_sessions:
            raise AdmissionRefused(
                f"The server is at its limit of {self.max_sessions} concurrent sessions; "
                "try again later.",
                "session_limit_reached",
            )

    def hold(self, session: Session) -> None:
        """Count a session that will be served soon (its set-up still has awaits to go), so
        that set-ups in flight cannot exceed the limit together."""
        self.sessions[session.id] = session
        self._idle.clear()

    def release(self, session: Session) -> None:
        """A held session whose set-up failed: it will not be served."""
        self.sessions.pop(session.id, None)
        if not self.sessions:
            self._idle.set()
        if self._on_release is not None:
            self._on_release()

    async def serve(self, session: Session, on_end: Callable[[Ended], None] | None = None) -> Ended:
        self.hold(session)
        try:
            ended = await session.run()
            log.info("session %s ended: %s", session.id, ended.reason)
            if on_end is not None:
                on_end(ended)
            return ended
        finally:
            self.release(session)

    async def drain(self, deadline_s: float) -> None:
        """Stop admitting, ask every session to end with a clear reason, wait with a deadline.
        Sessions end with close code 1012 so clients that reconnect may do so."""
        self._draining = True
        for session in list(self.sessions.values()):
            session.end(
                "server_shutdown",
                "server_shutting_down",
                "The server is restarting; reconnect to start a new session.",
                code=1012,
            )
        try:
            async with asyncio.timeout(deadline_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d sessions still open after %.1f s", len(self.sessions), deadline_s)
