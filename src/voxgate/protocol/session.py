"""The session object: its fields, defaults and the rules of ``session.update``.

Rules (PROTOCOL.md §6.5):
- an update is a partial merge; nested objects merge field by field;
- ``null`` / ``""`` / ``[]`` clear a field;
- ``model`` may be set until the first response starts (clients such as the Agents SDK send
  their configured model in their first update, whatever the URL said); after that it cannot
  change (an unchanged value is always accepted);
- ``voice`` cannot change once the session has produced assistant audio (unchanged is fine);
- ``tracing`` cannot change once enabled (an identical value is accepted);
- an invalid update is rejected whole.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from . import unsupported
from .errors import ProtocolError, from_validation_error
from .mcp import McpToolEntry

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, friendly voice assistant. Answer briefly and clearly, in a warm tone. "
    "Speak in the language the user speaks."
)
# Fields a client may echo back from session.created; they are ours and never updated.
_ECHO_ONLY = ("id", "object", "expires_at")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PcmFormat(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class PcmuFormat(_Strict):
    type: Literal["audio/pcmu"]


class PcmaFormat(_Strict):
    type: Literal["audio/pcma"]


AudioFormatConfig = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class ServerVad(_Strict):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    idle_timeout_ms: int | None = Field(None, ge=5000, le=30000)
    create_response: bool = True
    interrupt_response: bool = True


class SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"]
    strength: float = Field(1.0, ge=0.0, le=1.0)


class Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    prompt: str | None = None
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class AudioInput(_Strict):
    format: AudioFormatConfig = Field(default_factory=PcmFormat)
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = Field(default_factory=ServerVad)


class AudioOutput(_Strict):
    format: AudioFormatConfig = Field(default_factory=PcmFormat)
    voice: str | dict[str, str] = DEFAULT_VOICE
    speed: float = Field(1.0, ge=0.25, le=1.5)


class AudioConfig(_Strict):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


class FunctionTool(_Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "mcp" if kind == "mcp" else "function"


# MCP servers (mcp.py) are listed and called by the server.
Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[McpToolEntry, Tag("mcp")],
    Discriminator(_tool_kind),
]


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


class ToolChoiceMcp(_Strict):
    """Call a tool of this MCP server (``name``: that one); see mcp_flow.with_mcp."""

    type: Literal["mcp"]
    server_label: str
    name: str | None = None


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction | ToolChoiceMcp


class TracingConfig(_Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class TokenLimits(_Strict):
    post_instructions: int | None = Field(None, ge=1)


class RetentionRatio(_Strict):
    type: Literal["retention_ratio"]
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = None


class Reasoning(_Strict):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class Prompt(_Strict):
    """A stored prompt reference (resolved by `prompts.py`)."""

    id: str = Field(min_length=1)
    version: str | None = None
    variables: dict[str, Any] | None = None


class SessionConfig(_Strict):
    """The full, effective configuration of a ``realtime`` session."""

    type: Literal["realtime"]
    model: str = DEFAULT_MODEL
    output_modalities: list[Literal["audio", "text"]] = Field(
        default_factory=lambda: ["audio"],  # type: ignore[arg-type]  # a literal list
        min_length=1,
        max_length=1,
    )
    instructions: str = DEFAULT_INSTRUCTIONS
    audio: AudioConfig = Field(default_factory=AudioConfig)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] = "inf"
    tracing: Literal["auto"] | TracingConfig | None = None
    truncation: Literal["auto", "disabled"] | RetentionRatio = "auto"
    prompt: Prompt | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None

    def to_wire(self, *, session_id: str, expires_at: int) -> dict[str, Any]:
        """The session as clients see it in ``session.created`` / ``session.updated``."""
        body = self.model_dump(mode="json")
        return {"object": "realtime.session", "id": session_id, "expires_at": expires_at, **body}

    @property
    def voice(self) -> str:
        voice = self.audio.output.voice
        return voice if isinstance(voice, str) else voice.get("id", DEFAULT_VOICE)


def new_session(model: str | None = None, instructions: str | None = None) -> SessionConfig:
    """A fresh session with the server defaults."""
    config = SessionConfig(type="realtime")
    if model:
        config.model = model
    if instructions is not None:
        config.instructions = instructions
    return config


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Field-by-field merge of nested objects; a ``turn_detection`` of another type replaces
    the old one whole, so it starts from its own defaults."""
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        same_kind = not (
            isinstance(old, dict)
            and isinstance(value, dict)
            and "type" in value
            and key in {"turn_detection", "format", "truncation"}
            and old.get("type") != value.get("type")
        )
        if isinstance(old, dict) and isinstance(value, dict) and same_kind and key != "metadata":
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_update(
    current: SessionConfig,
    patch: Any,
    *,
    audio_produced: bool,
    model_locked: bool = False,
    logprobs: bool = False,
) -> SessionConfig:
    """The session after ``session.update`` with ``patch``, or a ProtocolError."""
    if not isinstance(patch, dict):
        raise ProtocolError("'session' must be an object.", code="invalid_type", param="session")
    if "type" not in patch:
        raise ProtocolError(
            "Missing required parameter: 'session.type'.",
            code="missing_required_parameter",
            param="session.type",
        )
    patch = {k: v for k, v in patch.items() if k not in _ECHO_ONLY}
    unsupported.check(patch, "session", logprobs=logprobs)
    try:
        merged = SessionConfig.model_validate(_merge(current.model_dump(mode="json"), patch))
    except ValidationError as exc:
        raise from_validation_error(exc, "session") from None
    _check_immutable(current, merged, audio_produced=audio_produced, model_locked=model_locked)
    return merged


def _check_immutable(
    old: SessionConfig, new: SessionConfig, *, audio_produced: bool, model_locked: bool
) -> None:
    if model_locked and new.model != old.model:
        raise ProtocolError(
            f"The session model cannot be changed once a response has started (it is "
            f"'{old.model}'); open a new session to use another model.",
            param="session.model",
        )
    if audio_produced and new.audio.output.voice != old.audio.output.voice:
        raise ProtocolError(
            "Cannot update a conversation's voice if assistant audio is present.",
            code="cannot_update_voice",
            param="session.audio.output.voice",
        )
    if old.tracing is not None and new.tracing != old.tracing:
        raise ProtocolError(
            "Tracing cannot be modified once it has been enabled for a session.",
            param="session.tracing",
        )
