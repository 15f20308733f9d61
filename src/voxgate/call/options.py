"""What a call is asked to do, the errors that end it, and the wire format it speaks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

TurnDetection = Literal["server_vad", "semantic_vad", "none"]
Verbosity = Literal["quiet", "normal", "verbose"]

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
# The espeak voice the embedded recogniser (pocketsphinx) heard best when this was chosen:
# word error ~0.01 over five short sentences, against 0.23-0.53 for the other voices.
DEFAULT_VOICE = "marin"
WIRE_RATE = 24000
BYTES_PER_SECOND = WIRE_RATE * 2
LEVELS: dict[Verbosity, int] = {"quiet": 0, "normal": 1, "verbose": 2}


class CallError(Exception):
    """The call cannot go on; the message tells the user why."""


class CallUsageError(ValueError):
    """Options that cannot work together (the command exits with status 2)."""


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What to say, where, and how. Exactly one of ``wav`` and ``text`` is required."""

    wav: Path | None = None
    text: str | None = None
    voice: str = DEFAULT_VOICE
    url: str = DEFAULT_URL
    api_key: str | None = None
    model: str | None = None
    out: Path = Path("reply.wav")
    turn_detection: TurnDetection = "server_vad"
    timeout_s: float = 30.0
    verbosity: Verbosity = "normal"
    chunk_ms: int = 20
    # Silence before spoken --text: a caller draws breath before speaking, and the server's
    # VAD gets a moment of background to measure speech against.
    lead_in_s: float = 0.5
    # How long to wait after the reply for the transcript of the user's audio, which the
    # server makes in parallel and may deliver after response.done.
    transcript_grace_s: float = 2.0

    def __post_init__(self) -> None:
        if self.wav is not None and self.text is not None:
            raise CallUsageError("give either a WAV file or --text, not both")
        if self.wav is None and self.text is None:
            raise CallUsageError("give a WAV file to play, or --text to speak")
        if self.text is not None and not self.text.strip():
            raise CallUsageError("--text is empty: there is nothing to say")
        if self.turn_detection not in get_args(TurnDetection):
            choices = ", ".join(get_args(TurnDetection))
            raise CallUsageError(f"--turn-detection must be one of {choices}")
        if self.verbosity not in LEVELS:
            raise CallUsageError(f"verbosity must be one of {', '.join(LEVELS)}")
        if not self.timeout_s > 0:
            raise CallUsageError("--timeout must be more than 0 seconds")
        if not 10 <= self.chunk_ms <= 100:
            raise CallUsageError("chunk_ms must be between 10 and 100")
