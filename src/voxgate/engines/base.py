"""Engine interfaces: what the session asks of speech-to-text, text-to-speech, language
models and voice activity detection.

Every interface is small and stream-shaped so that providers slot in without touching the
session: the embedded CPU engines live in ``engines/local``, scripted fakes for tests in
``engines/testing.py``. Audio crossing these interfaces is always 16-bit signed little-endian
mono PCM at the rate the engine declares (``sample_rate``); the session resamples.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

# ---------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------

# Chat messages use the Chat Completions shape ({"role", "content", "tool_calls",
# "tool_call_id"}): it is what every OpenAI-compatible LLM server accepts, so it is the one
# interchange format between the conversation and any language model.
ChatMessage = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One generation: the context, the tools and the limits for a single response."""

    instructions: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    # "auto" | "none" | "required" | the name of one function that must be called.
    tool_choice: str = "auto"
    max_output_tokens: int | None = None
    # Passed to the model when set (None: the model's default, and nothing is sent).
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call. ``index`` tells parallel calls apart; ``call_id`` and ``name``
    arrive on the first delta of a call, ``arguments`` pieces on every delta."""

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class LLMDone:
    """End of generation. ``finish_reason`` is "stop", "length" or "tool_calls"."""

    finish_reason: Literal["stop", "length", "tool_calls"] = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None


LLMEvent = TextDelta | ToolCallDelta | LLMDone


@runtime_checkable
class LLMEngine(Protocol):
    """Streams one answer. Closing the iterator (``aclose``) aborts the generation."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Text to speech
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class TTSEngine(Protocol):
    """Speaks text as it is produced.

    ``synthesize`` yields PCM16 chunks at ``sample_rate`` as soon as they exist (first audio in
    milliseconds for the embedded engine). Closing the iterator stops synthesis at once.
    ``voice`` is an OpenAI voice name (alloy, ash, …) or an engine-specific voice id.
    """

    name: str
    sample_rate: int

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Speech to text
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One transcript token with its log probability (the shape of the Realtime API's
    transcription ``logprobs`` entries)."""

    token: str
    logprob: float
    bytes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    # Seconds of audio that were decoded; the basis for duration-based usage.
    audio_seconds: float = 0.0
    # Per-token log probabilities, from engines that have them and when they were asked for.
    logprobs: tuple[TokenLogprob, ...] | None = None


@runtime_checkable
class STTStream(Protocol):
    """One utterance being transcribed while it is spoken."""

    async def push(self, pcm: bytes) -> str | None:
        """Feed audio; return the new partial hypothesis when it changed, else None."""
        ...

    async def finish(self) -> Transcript: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SpeculativeSTTStream(STTStream, Protocol):
    """A stream that can decode what it has heard so far without ending the utterance
    (Whisper): the session asks when a pause begins, so the transcript is ready if the turn
    ends there."""

    async def peek(self) -> Transcript: ...


@runtime_checkable
class STTEngine(Protocol):
    """``language`` (ISO-639-1, "en") and ``prompt`` (vocabulary or style to expect) are the
    client's transcription hints; an engine that cannot use a prompt ignores it.
    ``logprobs``: whether ``open_stream(logprobs=True)`` gives ``Transcript.logprobs``."""

    name: str
    sample_rate: int
    logprobs: bool

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> STTStream:
        """A new utterance. ``language``: ISO 639-1 (or a BCP 47 tag); ``prompt``: text the
        recogniser may read as what came before (engines that cannot use it ignore it);
        ``logprobs``: ask for per-token log probabilities (``Transcript.logprobs``; None from
        engines that have none)."""
        ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Voice activity detection
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class VADStream(Protocol):
    """Per-session VAD state. ``process`` takes any amount of PCM16 at the engine's rate and
    returns one speech probability (0–1) per complete window of ``window_samples``; leftover
    samples are kept for the next call."""

    window_samples: int

    def process(self, pcm: bytes) -> list[float]: ...

    def reset(self) -> None: ...


@runtime_checkable
class VADEngine(Protocol):
    name: str
    sample_rate: int

    def open_stream(self) -> VADStream: ...
