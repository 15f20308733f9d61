"""The one registry of live sessions, whatever their transport: capacity, lookup by session
and by call id, the background tasks that serve calls, and drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .inbox import Ended
from .session import Session

log = logging.getLogger(__name__)
Finalizer = Callable[[Session], Awaitable[None]]


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
        # Sessions of live calls (WebRTC, later SIP) by call id: hang-up and sideband attach.
        self.calls: dict[str, Session] = {}
        self._finalizers: dict[str, Finalizer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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

    def hold(self, session: Session, finalize: Finalizer | None = None) -> None:
        """Count a session that will be served soon (its set-up still has awaits to go), so
        that set-ups in flight cannot exceed the limit together. ``finalize`` runs once when
        it is released (served to the end, or its set-up failed)."""
        self.sessions[session.id] = session
        if finalize is not None:
            self._finalizers[session.id] = finalize
        self._idle.clear()

    async def release(self, session: Session) -> None:
        """Forget a session: it ended, or its set-up failed and it will not be served."""
        if self.sessions.pop(session.id, None) is None:
            return
        finalize = self._finalizers.pop(session.id, None)
        try:
            if finalize is not None:
                await finalize(session)
        except Exception:
            log.exception("finalizing session %s failed", session.id)
        finally:
            if not self.sessions:
                self._idle.set()
            if self._on_release is not None:
                self._on_release()

    async def serve(self, session: Session, on_end: Callable[[Ended], None] | None = None) -> Ended:
        if session.id not in self.sessions:
            self.hold(session)
        try:
            ended = await session.run()
            log.info("session %s ended: %s", session.id, ended.reason)
            if on_end is not None:
                on_end(ended)
            return ended
        finally:
            await asyncio.shield(self.release(session))

    def serve_call(
        self, call_id: str, session: Session, close: Callable[[], Awaitable[None]]
    ) -> None:
        """Serve a call's session in the background; forget the call and ``close`` its
        transport when the session ends."""

        async def runner() -> None:
            try:
                await self.serve(session)
            finally:
                self.calls.pop(call_id, None)
                with contextlib.suppress(Exception):
                    await close()

        self.calls[call_id] = session
        task = asyncio.get_running_loop().create_task(runner(), name=f"{call_id}:session")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def live_call(self, call_id: str) -> Session | None:
        session = self.calls.get(call_id)
        return session if session is not None and session.ended is None else None

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

    async def wait_closed(self) -> None:
        """Wait for the calls' background tasks (after `drain`)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
