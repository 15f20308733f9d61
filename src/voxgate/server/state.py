"""What the server's routes share: settings, engines, the session registry, the controls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..control.shared import SharedState
from ..protocol.prompts import StoredPrompt
from ..session.engines import EngineSet
from ..session.manager import SessionManager
from ..session.session import SessionLimits
from ..settings import Settings
from .controls import Controls

if TYPE_CHECKING:
    from .ledger import Ledger

# How far reply audio may run ahead of real time (see ResponseRunner pacing).
AUDIO_LEAD_S = 1.0


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

    @property
    def shared(self) -> SharedState:
        """What replicas share (Redis with VOXGATE_REDIS_URL); in-process by default."""
        return self.controls.shared

    @property
    def limits(self) -> SessionLimits:
        s = self.settings
        return SessionLimits(
            max_duration_s=s.max_session_minutes * 60,
            idle_timeout_s=s.idle_timeout_s,
            audio_lead_s=AUDIO_LEAD_S,
            llm_context_tokens=s.llm_context_tokens,
        )

    @property
    def prompts(self) -> dict[str, StoredPrompt]:
        """The stored prompts sessions may reference by id."""
        return {
            prompt_id: StoredPrompt(instructions=p.instructions, version=p.version)
            for prompt_id, p in self.settings.prompts.items()
        }
