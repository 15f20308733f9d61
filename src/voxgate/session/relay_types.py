"""The signals and hooks of a `RelayDriver` (relay.py), apart so that what plugs into a relay
(failover, renewal, server tools) can name them without the driver's whole module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..engines.upstream import UpstreamError
from ..protocol.connection import RealtimeConnection
from .driver import DriverOutput

if TYPE_CHECKING:
    from .relay import RelayDriver


@dataclass(frozen=True, slots=True)
class UpstreamLost:
    """The upstream link failed. ``phase``: "connect" before the client saw
    ``session.created``, "session" after. ``cut``: responses it cut off; ``asked``: responses
    asked for (``response.create`` sent) that it never started."""

    error: UpstreamError
    phase: Literal["connect", "session"]
    cut: tuple[str, ...] = ()
    asked: int = 0


LostHandler = Callable[[RealtimeConnection, UpstreamLost], Sequence[DriverOutput]]
UpstreamHook = Callable[
    ["RelayDriver", RealtimeConnection, dict[str, Any]], Sequence[DriverOutput] | None
]
AfterEvent = Callable[["RelayDriver", RealtimeConnection], Sequence[DriverOutput]]
Announce = Literal["created", "updated", "none"]
