"""What the sans-IO connection asks of the runtime. The connection never does I/O itself;
it returns these beside the server events and the session carries them out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .items import Item
from .mcp import ApprovedCall, ListMcpTools, McpFunction


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """Everything an engine needs to produce one response, fixed at ``response.create``."""

    response_id: str
    conversation: Literal["auto", "none"]
    output_modalities: list[str]
    voice: str
    output_format: str
    speed: float
    instructions: str
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    max_output_tokens: int | None
    # The items the model sees, in order (a snapshot: later edits do not change it).
    context: list[Item] = field(default_factory=list)
    metadata: dict[str, str] | None = None
    # The session's truncation policy: "auto", "disabled" or a retention_ratio object.
    truncation: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    # MCP tools offered as functions, by the function name the model sees (mcp.py), and
    # the calls the user approved, to run before the model speaks.
    mcp: Mapping[str, McpFunction] = field(default_factory=dict)
    approved: tuple[ApprovedCall, ...] = ()

    @property
    def audio(self) -> bool:
        return "audio" in self.output_modalities


@dataclass(frozen=True, slots=True)
class StartResponse:
    plan: ResponsePlan


@dataclass(frozen=True, slots=True)
class CancelResponse:
    response_id: str


@dataclass(frozen=True, slots=True)
class InputAudio:
    """Audio the client appended, in the session's input format, for turn detection."""

    data: bytes
    format: str


@dataclass(frozen=True, slots=True)
class TranscribeItem:
    item_id: str
    audio: bytes
    format: str


@dataclass(frozen=True, slots=True)
class ClearOutputAudio:
    """Stop server-side playout now (barge-in or the client's ``output_audio_buffer.clear``).
    ``response_id`` None: whatever is playing."""

    response_id: str | None


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Server-side playout (WebRTC, SIP): reply audio for the peer's track, in place of a
    ``response.output_audio.delta`` event."""

    response_id: str
    item_id: str
    content_index: int
    data: bytes
    format: str


@dataclass(frozen=True, slots=True)
class EndOfAudio:
    """Server-side playout: the response will queue no more audio; once what it queued has
    played, ``output_audio_buffer.stopped`` follows."""

    response_id: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What one response consumed, counted the way ``response.done`` reports it, plus the
    local engines' own measures (seconds of speech made, characters spoken)."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    audio_seconds_out: float = 0.0
    characters_spoken: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens

    @property
    def output_tokens(self) -> int:
        return self.output_text_tokens + self.output_audio_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    """A response ended with this usage. Emitted once, just before its ``response.done``,
    which the runtime may hold back until the usage is recorded."""

    response_id: str
    status: str
    model: str
    usage: Usage
    # The assistant's words (text or audio transcript), per output message item.
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class UserInput:
    """A user item's words became known: a transcription finished (``audio_seconds`` of
    speech; ``transcription_model`` None when the client asked for no transcription events)
    or the client created a text message. Emitted before the events that show it."""

    item_id: str
    text: str
    audio_seconds: float = 0.0
    transcription_model: str | None = None


@dataclass(frozen=True, slots=True)
class ToolApproval:
    """A client (or sideband) answered an ``mcp_approval_request``: the runtime's tool
    broker settles the pending action."""

    item_id: str
    approval_request_id: str
    approve: bool
    reason: str | None = None


Command = (
    StartResponse
    | CancelResponse
    | InputAudio
    | TranscribeItem
    | ClearOutputAudio
    | PlayAudio
    | EndOfAudio
    | ResponseFinished
    | UserInput
    | ListMcpTools
    | ToolApproval
)
