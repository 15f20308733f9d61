"""Upstream Realtime services: what voxgate relays a session to, and the wire protocol it
speaks to them.

`Upstream` is one configured service (built by the server from ``[[upstreams]]``).
`UpstreamProtocol` is the seam for the wire protocol: `RealtimeWebSocket` speaks the OpenAI
Realtime API over WebSocket (``wss://api.openai.com/v1/realtime`` or another voxgate); a
second protocol (OpenAI's Live API) would be a second implementation beside it.
"""

from ...protocol.live import LIVE_MODELS, live_model_error
from .base import (
    Upstream,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
    UpstreamProtocol,
    UpstreamRefused,
    UpstreamStalled,
    UpstreamUnreachable,
)
from .realtime_ws import RealtimeWebSocket

__all__ = [
    "LIVE_MODELS",
    "RealtimeWebSocket",
    "Upstream",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamProtocol",
    "UpstreamRefused",
    "UpstreamStalled",
    "UpstreamUnreachable",
    "live_model_error",
]
