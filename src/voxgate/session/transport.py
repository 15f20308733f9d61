"""What a session needs from a transport (WebSocket, WebRTC data channel, …) and, where the
server plays the reply audio itself, from its playout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..audio import AudioFormat


class TransportClosed(Exception):
    """The peer went away; the session ends."""


class TransportStalled(TransportClosed):
    """The peer stopped reading: a send made no progress within the transport's deadline.
    The session ends as for a client too slow to keep up."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next client frame; raises TransportClosed when the peer is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one server event (JSON text); raises TransportClosed when the peer is gone."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class PlayoutCut:
    """Where server-side playout was cut: the user heard ``played_ms`` of the item's audio."""

    response_id: str
    item_id: str
    content_index: int
    played_ms: int


class Playout(Protocol):
    """Server-side playout of reply audio (WebRTC, SIP, Twilio): the transport owns the clock
    that plays the audio, so it knows how much of it the user heard. It declares the audio
    ``format`` it plays (24 kHz PCM16 for WebRTC, 8 kHz G.711 for a phone leg); the session
    converts reply audio to that format before `play`."""

    # Not settable by the session: a property or a plain attribute both fit.
    @property
    def format(self) -> AudioFormat: ...

    def bind(self, stopped: Callable[[str], Awaitable[None]]) -> None:
        """``stopped(response_id)`` is awaited once a finished response has fully played."""
        ...

    def play(self, response_id: str, item_id: str, content_index: int, audio: bytes) -> None:
        """Queue audio (in ``format``) of a response behind what is queued."""
        ...

    def end(self, response_id: str) -> None:
        """The response will queue no more audio."""
        ...

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        """Drop the queued audio (of ``response_id``, or whatever plays); None if nothing was."""
        ...


@runtime_checkable
class BoundedPlayout(Playout, Protocol):
    """A playout whose queue is bounded: a response waits in `room` before it queues more
    audio (see `session/playout.py`)."""

    def full(self) -> bool:
        """The queue is at its bound: `room` would wait."""
        ...

    async def room(self) -> None: ...


@runtime_checkable
class TappedPlayout(Playout, Protocol):
    """A playout that can report the audio it plays, as it plays it (for recording)."""

    def tap(self, listener: Callable[[bytes], None]) -> None: ...
