"""How a call went."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import BYTES_PER_SECOND


@dataclass
class CallResult:
    """How the call went. ``error`` is None when it succeeded."""

    error: str | None = None
    session_id: str | None = None
    speech_s: float = 0.0
    user_transcripts: list[str] = field(default_factory=list)
    response_id: str | None = None
    response_status: str | None = None
    assistant_transcript: str = ""
    usage: dict[str, Any] | None = None
    reply_audio: bytes = b""  # PCM16, 24 kHz, mono
    saved_to: Path | None = None
    # From the end of the user's audio to the reply's first audio (negative: it came sooner).
    latency_s: float | None = None
    events: list[str] = field(default_factory=list)  # server event types, in order

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def reply_s(self) -> float:
        return len(self.reply_audio) / BYTES_PER_SECOND
