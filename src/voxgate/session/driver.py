"""What serves a session's conversation: the seam between a `Session` and its engine.

The session owns everything around the conversation: the transport, inbox and outbox,
sidebands, watchdog, observer (ledger, budgets) and playout. A `Driver` owns how client
events and media-track audio become server events:
- `PipelineDriver` (``pipeline.py``): the embedded pipeline, the sans-IO connection driving
  the listener (VAD, speech-to-text) and one response runner per response;
- `RelayDriver` (``relay.py``): an upstream Realtime service, event for event.

A driver is called on the session's main loop only (single writer). Work that waits runs in
tasks it starts through `DriverHost.spawn` and reports back through `DriverHost.post`, as the
listener and the response runner always have. The session may swap its driver mid-session
(`Session.switch_driver`): the old one is closed, the new one bound and used from then on.

Besides the connection's own outputs (server events and commands) a driver may return
`Forward`: a server event made elsewhere (an upstream's), sent to the client as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol import events as ev
from ..protocol.commands import CancelResponse, InputAudio, StartResponse, TranscribeItem
from ..protocol.connection import Output, RealtimeConnection
from .clock import Clock
from .rate_limits import RateLimitBook
from .transport import PlayoutCut

if TYPE_CHECKING:
    from .engines import EngineSet
    from .mcp import SessionMcp
    from .session import SessionLimits


@dataclass(frozen=True, slots=True)
class Forward:
    """A server event made elsewhere (by an upstream), sent as is: its ids and fields are the
    client's to see unchanged. ``response_id`` orders it with that response's other events;
    ``media`` puts it in the outbox's media lane (audio deltas)."""

    text: str
    type: str
    response_id: str | None = None
    media: bool = False


PLAYOUT_RATE = 24000  # what a Playout and a media track carry: 24 kHz PCM16 mono
DriverOutput = Output | Forward
# Main-loop work posted from a task: a function of the connection returning what to apply.
Progress = Callable[[RealtimeConnection], Sequence[DriverOutput]]
Post = Callable[[Progress], Awaitable[None]]
Spawn = Callable[[Awaitable[None], str], "asyncio.Task[None]"]
# The commands of the connection that a driver carries out (the rest are the session's).
DriverCommand = StartResponse | CancelResponse | InputAudio | TranscribeItem


@dataclass(frozen=True, slots=True)
class DriverHost:
    """What a session lends its driver."""

    session_id: str
    post: Post  # main-loop work, from any task (through the inbox)
    spawn: Spawn  # a named task in the session's task group
    clock: Clock
    limits: SessionLimits
    # Waits while the outbox's media lane is full: generation never runs far ahead.
    media_space: Callable[[], Awaitable[None]]
    # A response started (the observer checks the budgets beside it).
    response_started: Callable[[], None]
    # Activity now: the idle timeout counts from here.
    touch: Callable[[], None]
    # End the session: (reason, error code or None, message for the client, close code).
    end: Callable[[str, str | None, str, int], None]
    # The client's rate limits: the upstream's merged with the budgets'.
    rate_limits: RateLimitBook
    # Serve the rest of the session with another driver (failover, renewal; main loop only).
    switch: Callable[[Driver, str], None]
    # The session's MCP work (listings, connections, audit): a pipeline driver switched to
    # mid-session runs MCP calls with it. None: a session built without one.
    mcp: SessionMcp | None = None
    # The session's embedded engines: a relay speaks the session's own sentences with them
    # (the disclosure). None: a session built without any.
    engines: EngineSet | None = None
    # The server's playout holds all the audio it may (`playout.MAX_QUEUED_S`); a relay,
    # which cannot make the upstream wait, plays no more of that reply. Always False where
    # the client plays the audio.
    playout_full: Callable[[], bool] = lambda: False


class Driver(Protocol):
    """See the module docstring. Every method runs on the session's main loop."""

    # What serves the session, for logs and the audit: "pipeline", "relay:<upstream>".
    name: str

    def bind(self, host: DriverHost) -> None:
        """Start serving for this session, inside its task group (``host.spawn`` works);
        before any other call but `busy` and `close`."""
        ...

    def start(self, conn: RealtimeConnection) -> Sequence[DriverOutput]:
        """The session's first events (``session.created``); only for the session's first
        driver, not one switched to."""
        ...

    def session_created(self, conn: RealtimeConnection) -> ev.ServerEvent | Forward:
        """The ``session.created`` a sideband client sees first."""
        ...

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> Sequence[DriverOutput]:
        """One client event frame (primary or sideband client)."""
        ...

    def track_audio(self, conn: RealtimeConnection, pcm24k: bytes) -> Sequence[DriverOutput]:
        """Microphone audio from a media track (24 kHz PCM16 mono), as if appended."""
        ...

    def command(self, conn: RealtimeConnection, cmd: DriverCommand) -> Sequence[DriverOutput]:
        """Carry out a command of the connection that concerns the conversation's engine."""
        ...

    @property
    def busy(self) -> bool:
        """A response is being generated (the session is not idle)."""
        ...

    def stop_responses(
        self, conn: RealtimeConnection, details: dict[str, Any]
    ) -> Sequence[DriverOutput]:
        """End every response in progress now, as ``cancelled`` with ``details``: their
        ``response.done`` events, and a `CancelResponse` each (the session drops their
        queued audio)."""
        ...

    def playout_cut(self, conn: RealtimeConnection, cut: PlayoutCut) -> Sequence[DriverOutput]:
        """Server-side playout was cut short (barge-in, the client's clear): what the client
        hears about it, and the item truncated to what was played."""
        ...

    def playout_stopped(self, conn: RealtimeConnection, response_id: str) -> Sequence[DriverOutput]:
        """A finished response's audio has all played (``output_audio_buffer.stopped``)."""
        ...

    def close(self) -> None:
        """Stop all work (tasks, upstream connections) and drop the host (it holds methods of
        the session: a closed session must be no reference cycle); idempotent.
        `stop_responses` still works after it."""
        ...
