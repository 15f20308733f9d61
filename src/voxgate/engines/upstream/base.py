"""The upstream seam: a configured service, the protocol that connects to it, the
connection it gives, and the typed failures a relay acts on (failover reads `retryable`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

from ..errors import EngineError


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream Realtime service (see docs/relay.md). ``api_key`` is sent to it and to
    nothing else: ``repr`` leaves it out."""

    name: str
    url: str
    api_key: str = field(default="", repr=False)
    models: tuple[str, ...] = ("*",)
    max_session_seconds: float = 3600.0
    direct: bool = False
    stall_timeout_s: float = 15.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def serves(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def engine(self) -> str:
        """How the ledger and logs name the engine serving a session relayed here."""
        return f"upstream:{self.name}"


class UpstreamError(EngineError):
    """The upstream link failed. ``retryable``: the same session may work if opened again
    (there or at another upstream): unreachable, 429/5xx, dropped, stalled."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message, origin="upstream", retryable=retryable)


class UpstreamUnreachable(UpstreamError):
    """No connection: refused, reset, DNS, TLS or the opening handshake timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class UpstreamRefused(UpstreamError):
    """The upstream answered the opening handshake with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, retryable=status == 429 or status >= 500)
        self.status = status


class UpstreamClosed(UpstreamError):
    """The upstream closed the session's connection (or it dropped) mid-session."""

    def __init__(self, message: str, code: int | None) -> None:
        # 1008 is the upstream's policy (its own limits): asking again gets the same answer.
        super().__init__(message, retryable=code != 1008)
        self.code = code


class UpstreamStalled(UpstreamError):
    """No event from the upstream for ``stall_timeout_s`` while a response was expected."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class UpstreamConnection(Protocol):
    """One upstream session's connection: text frames both ways."""

    async def send(self, text: str) -> None:
        """Send one client event; raises UpstreamClosed."""
        ...

    async def recv(self) -> str:
        """The next server event; raises UpstreamClosed."""
        ...

    async def close(self) -> None: ...


class UpstreamProtocol(Protocol):
    """Opens upstream sessions in one wire protocol."""

    async def connect(
        self, upstream: Upstream, model: str, *, safety_identifier: str | None = None
    ) -> UpstreamConnection:
        """A new session at ``upstream`` for ``model``; raises UpstreamUnreachable or
        UpstreamRefused."""
        ...
