"""In-memory transport and a session harness for tests: no sockets, no real time.

`MemoryTransport` is the server end of a connection (it implements `Transport`); the test
plays the client through its peer-side methods: `send_event` a client frame, `next_event` /
`events_until` to await server events, `close_from_peer` to hang up, `hold` / `resume` to stop
the socket from draining (so the session's outbox backs up). `running_session` runs a
`Session` on a `VirtualClock` around such a transport and makes sure it ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from ..control.observer import SessionObserver
from ..protocol.connection import RealtimeConnection
from .clock import VirtualClock
from .driver import Driver
from .engines import EngineSet
from .inbox import Ended
from .session import Session, SessionLimits
from .transport import TransportClosed

Event = dict[str, Any]
# Checks one server event's JSON (e.g. against the openai SDK's union); raises if it is wrong.
Validator = Callable[[str], object]


class MemoryTransport:
    """Both ends of an in-memory connection. Frames are delivered in order, instantly."""

    def __init__(self, *, validate: Validator | None = None, timeout_s: float = 5.0) -> None:
        self._validate = validate
        # Real seconds a test waits for a server event before failing (a hang guard only).
        self.timeout_s = timeout_s
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._outgoing: asyncio.Queue[str | None] = asyncio.Queue()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.sent: list[str] = []
        self.frames_taken = 0
        # Sends waiting because the test called `hold`.
        self.stalled_sends = 0
        self.peer_closed = False
        self.close_calls: list[tuple[int, str]] = []

    # -- server side (the Transport protocol) ---------------------------------------------

    async def receive(self) -> str | bytes:
        frame = await self._incoming.get()
        if frame is None:
            self._incoming.put_nowait(None)  # every later receive sees the hang-up too
            raise TransportClosed("the peer closed the connection")
        self.frames_taken += 1
        return frame

    async def send(self, text: str) -> None:
        self.stalled_sends += 1
        try:
            await self._flowing.wait()
        finally:
            self.stalled_sends -= 1
        if self.peer_closed or self.close_calls:
            raise TransportClosed("the connection is closed")
        if self._validate is not None:
            self._validate(text)
        self.sent.append(text)
        self._outgoing.put_nowait(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.close_calls:
            self._outgoing.put_nowait(None)
        self.close_calls.append((code, reason))

    # -- client side ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The server closed its end."""
        return bool(self.close_calls)

    def send_event(self, event: Mapping[str, Any] | str | bytes) -> None:
        """Send one client frame: a dict is sent as JSON text, str and bytes as they are."""
        if self.peer_closed:
            raise TransportClosed("the peer already closed the connection")
        frame = json.dumps(dict(event)) if isinstance(event, Mapping) else event
        self._incoming.put_nowait(frame)

    def close_from_peer(self) -> None:
        """Hang up as a client would: the server's next receive and send fail."""
        if not self.peer_closed:
            self.peer_closed = True
            self._incoming.put_nowait(None)
            self._flowing.set()

    async def next_event(self) -> Event:
        """The next server event; raises TransportClosed once the server has closed and
        everything it sent was read."""
        async with asyncio.timeout(self.timeout_s):
            text = await self._outgoing.get()
        if text is None:
            self._outgoing.put_nowait(None)
            raise TransportClosed("the server closed the connection")
        event: Event = json.loads(text)
        return event

    async def events_until(self, kind: str | Callable[[Event], bool]) -> list[Event]:
        """Server events up to and including the first of type ``kind`` (or matching it)."""
        match = (lambda e: e["type"] == kind) if isinstance(kind, str) else kind
        seen: list[Event] = []
        while True:
            seen.append(await self.next_event())
            if match(seen[-1]):
                return seen

    async def rest(self) -> list[Event]:
        """Every server event until the server closes the connection."""
        seen: list[Event] = []
        while True:
            try:
                seen.append(await self.next_event())
            except TransportClosed:
                return seen

    def hold(self) -> None:
        """Stop delivering: the server's `send` waits (a slow or stalled socket)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()


@dataclass
class RunningSession:
    session: Session
    transport: MemoryTransport
    clock: VirtualClock
    task: asyncio.Task[Ended]

    @property
    def connection(self) -> RealtimeConnection:
        return self.session.connection

    async def ended(self) -> Ended:
        """Wait (a bounded real time) for `Session.run` to return; its errors propagate."""
        async with asyncio.timeout(self.transport.timeout_s):
            return await self.task


@asynccontextmanager
async def running_session(
    engines: EngineSet,
    *,
    limits: SessionLimits = SessionLimits(idle_timeout_s=None),
    connection: RealtimeConnection | None = None,
    validate: Validator | None = None,
    observer: SessionObserver | None = None,
    transport: MemoryTransport | None = None,
    driver: Driver | None = None,
) -> AsyncIterator[RunningSession]:
    """Run a session on virtual time over a `MemoryTransport`. On exit the session is asked
    to end (if it has not) and must finish cleanly within the transport's timeout."""
    clock = VirtualClock()
    transport = transport or MemoryTransport(validate=validate)
    session = Session(
        connection or RealtimeConnection(),
        engines,
        transport,
        limits=limits,
        clock=clock,
        observer=observer,
        driver=driver,
    )
    task = asyncio.create_task(session.run(), name=f"test:{session.id}")
    running = RunningSession(session, transport, clock, task)
    try:
        yield running
    finally:
        if not task.done():
            session.end("test_finished")
        try:
            await running.ended()
        finally:
            if not task.done():  # it hung: do not leak it into the next test
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
