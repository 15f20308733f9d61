"""What the server's routes share: settings, engines, the session registry, the controls."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

from ..control.shared import SharedState
from ..engines.upstream import RealtimeWebSocket, Upstream, UpstreamProtocol
from ..protocol.limits import MIB, ConnectionLimits
from ..protocol.prompts import StoredPrompt
from ..session.clock import SystemClock
from ..session.engines import EngineSet
from ..session.manager import SessionManager
from ..session.session import SessionLimits
from ..session.tool_exec import ToolRegistry
from ..settings import Settings
from ..storage.recordings import RecordingStore
from .controls import Controls
from .metrics import Metrics
from .routing import upstreams

if TYPE_CHECKING:
    from .ledger import Ledger
    from .sip_calls import SipService

# Generation is not paced to playout: over WebSocket reply audio goes out as fast as it is
# made and the client buffers it, as with the hosted API. Where the server plays the reply
# itself (WebRTC), it holds at most this much audio ahead of what has played: a reply longer
# than that waits for playout to catch up (nothing is dropped), so its response.done comes
# when its last PLAYOUT_HOLD_S of audio are queued (~2.9 MB of 24 kHz audio per call).
PLAYOUT_HOLD_S = 60.0


@dataclass
class AppState:
    settings: Settings
    engines: EngineSet
    manager: SessionManager
    controls: Controls
    # The usage ledger (None only where a test builds state without one).
    ledger: Ledger | None = None
    # How other replicas reach this one (the owner recorded for its calls).
    advertise_url: str = ""
    # The server tools (None: none configured).
    tools: ToolRegistry | None = None
    # The SIP endpoint and its calls (None unless [sip] listen is set).
    sip: SipService | None = None
    metrics: Metrics = field(init=False)
    # How relayed sessions reach their upstream (the Realtime WebSocket protocol).
    upstream_protocol: UpstreamProtocol = field(default_factory=RealtimeWebSocket)
    upstreams: list[Upstream] = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(
            lambda: len(self.manager.sessions),
            SystemClock().monotonic,
            lambda: [session.driver.name for session in self.manager.sessions.values()],
        )
        self.engines = self.metrics.meter_engines(self.engines)
        self.upstreams = upstreams(self.settings)

    @property
    def shared(self) -> SharedState:
        """What replicas share (Redis with VOXGATE_REDIS_URL); in-process by default."""
        return self.controls.shared

    @cached_property
    def recordings(self) -> RecordingStore:
        """Session recordings (policy record_calls)."""
        s = self.settings
        return RecordingStore(s.recordings_dir or s.data_dir / "recordings")

    @property
    def limits(self) -> SessionLimits:
        """For sessions whose client plays the audio (WebSocket)."""
        s = self.settings
        return SessionLimits(
            max_duration_s=s.max_session_minutes * 60,
            idle_timeout_s=s.idle_timeout_s,
            audio_lead_s=None,
            llm_context_tokens=s.llm_context_tokens,
            max_outbox_bytes=int(s.max_outbox_mb * MIB),
            max_speech_chars=s.max_speech_chars,
        )

    @property
    def connection_limits(self) -> ConnectionLimits:
        s = self.settings
        return ConnectionLimits(
            max_items=s.max_conversation_items,
            max_bytes=int(s.max_conversation_mb * MIB),
            max_item_bytes=int(s.max_item_mb * MIB),
            max_responses=s.max_responses_in_flight,
        )

    @property
    def prompts(self) -> dict[str, StoredPrompt]:
        """The stored prompts sessions may reference by id."""
        return {
            prompt_id: StoredPrompt(instructions=p.instructions, version=p.version)
            for prompt_id, p in self.settings.prompts.items()
        }

    @property
    def transcription_logprobs(self) -> bool:
        """Whether the recogniser gives token log probabilities (Whisper does)."""
        return self.engines.stt is not None and self.engines.stt.logprobs

    @property
    def playout_limits(self) -> SessionLimits:
        """For sessions whose audio the server plays (WebRTC): see ``PLAYOUT_HOLD_S``."""
        return replace(self.limits, audio_lead_s=PLAYOUT_HOLD_S)
