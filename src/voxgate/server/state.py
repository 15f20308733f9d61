"""What the server's routes share: settings, engines, live sessions and calls."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..control.shared import MemorySharedState, SharedState
from ..session.engines import EngineSet
from ..session.manager import SessionManager
from ..session.session import SessionLimits
from ..settings import Settings
from ..transports.webrtc import CallRegistry

# How far reply audio may run ahead of real time (see ResponseRunner pacing).
AUDIO_LEAD_S = 1.0


@dataclass
class AppState:
    settings: Settings
    engines: EngineSet
    manager: SessionManager
    calls: CallRegistry = field(default_factory=CallRegistry)
    # What replicas share (Redis with VOXGATE_REDIS_URL); in-process by default.
    shared: SharedState = field(default_factory=MemorySharedState)
    # How other replicas reach this one (the owner recorded for its calls).
    advertise_url: str = ""

    @property
    def limits(self) -> SessionLimits:
        s = self.settings
        return SessionLimits(
            max_duration_s=s.max_session_minutes * 60,
            idle_timeout_s=s.idle_timeout_s,
            audio_lead_s=AUDIO_LEAD_S,
        )

    def credential_ok(self, credential: str | None) -> bool:
        return self.settings.dev_mode or credential in self.settings.api_keys
