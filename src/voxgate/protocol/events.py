"""The two closed unions of the protocol: client events in, server events out.

Client events are validated here (shape only; meaning is checked by the connection state
machine). Server events are small typed models whose JSON is exactly what the official
clients parse; `tests/test_conformance_*` hold every one of them against the `openai` SDK's
own server-event union.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError

from .decode import parse_json, readable_event_id
from .errors import ProtocolError, brief, from_validation_error
from .ids import new_id

# ---------------------------------------------------------------------------------------------
# Client → server
# ---------------------------------------------------------------------------------------------


class _ClientEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str | None = Field(None, max_length=512)


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"]
    # Validated against the session rules by `session.apply_update`, which knows the
    # current state (merge, immutable fields).
    session: dict[str, Any]


class InputAudioBufferAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"]


class OutputAudioBufferClear(_ClientEvent):
    type: Literal["output_audio_buffer.clear"]
    response_id: str | None = None


class ConversationItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"]
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemTruncate(_ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"]
    response: dict[str, Any] | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | OutputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemDelete
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel,
    Field(discriminator="type"),
]
_CLIENT_MODELS: tuple[type[_ClientEvent], ...] = (
    SessionUpdate,
    InputAudioBufferAppend,
    InputAudioBufferCommit,
    InputAudioBufferClear,
    OutputAudioBufferClear,
    ConversationItemCreate,
    ConversationItemRetrieve,
    ConversationItemDelete,
    ConversationItemTruncate,
    ResponseCreate,
    ResponseCancel,
)
_BY_TYPE: dict[str, type[_ClientEvent]] = {
    m.model_fields["type"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in _CLIENT_MODELS
}
CLIENT_EVENT_TYPES = frozenset(_BY_TYPE)
_SUPPORTED = ", ".join(sorted(CLIENT_EVENT_TYPES))


def parse_client_event(
    raw: str | bytes,
) -> tuple[ClientEvent | None, str | None, ProtocolError | None]:
    """Decode one client frame. Returns (event, client event_id, error); exactly one of event
    and error is set. The event_id is recovered even from an invalid event so the error can
    echo it."""
    if isinstance(raw, bytes):
        return (
            None,
            None,
            ProtocolError(
                "Binary frames are not supported; send events as JSON text frames.",
                code="invalid_event",
            ),
        )
    data, error = parse_json(raw)
    if not isinstance(data, dict):
        return (
            None,
            None,
            error
            or ProtocolError(
                "An event must be a JSON object with a 'type' field.", code="invalid_event"
            ),
        )
    event_id = readable_event_id(data)
    if error is not None:
        return None, event_id, error
    kind = data.get("type")
    if kind is None:
        return None, event_id, ProtocolError("The 'type' field is missing.", code="invalid_event")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:
        return (
            None,
            event_id,
            ProtocolError(
                f"Invalid value: {brief(kind)}. Supported values are: {_SUPPORTED}.",
                code="invalid_value",
                param="type",
            ),
        )
    try:
        # Validating against the one model (not the union) keeps the tag out of error paths.
        event: ClientEvent = _BY_TYPE[kind].model_validate(data)  # type: ignore[assignment]
        return event, event_id, None
    except ValidationError as exc:
        return None, event_id, from_validation_error(exc)


# ---------------------------------------------------------------------------------------------
# Server → client
# ---------------------------------------------------------------------------------------------


class ServerEvent(BaseModel):
    """Base of every server event: a fresh ``event_id`` for each one."""

    event_id: str = Field(default_factory=lambda: new_id("event"))

    def to_json(self) -> str:
        try:
            return self.model_dump_json()
        except PydanticSerializationError:
            # Text from an engine may hold a lone surrogate (client text is refused at the
            # door): escaped JSON still reaches the client instead of ending the session.
            return json.dumps(self.model_dump(mode="python"))


class SessionCreated(ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdated(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any]


class Error(ServerEvent):
    type: Literal["error"] = "error"
    error: dict[str, Any]


class InputAudioBufferCommitted(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioBufferSpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferTimeoutTriggered(ServerEvent):
    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class OutputAudioBufferEvent(ServerEvent):
    type: Literal[
        "output_audio_buffer.started", "output_audio_buffer.stopped", "output_audio_buffer.cleared"
    ]
    response_id: str


class ConversationItemAdded(ServerEvent):
    type: Literal["conversation.item.added"] = "conversation.item.added"
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemDone(ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    item: dict[str, Any]
    previous_item_id: str | None = None


class ConversationItemRetrieved(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: dict[str, Any]


class ConversationItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: dict[str, Any]
    # Per-token log probabilities, when the session's ``include`` asks for them.
    logprobs: list[dict[str, Any]] | None = None


class TranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: dict[str, Any]


class ResponseLifecycle(ServerEvent):
    type: Literal["response.created", "response.done"]
    response: dict[str, Any]


class ResponseOutputItem(ServerEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    response_id: str
    output_index: int
    item: dict[str, Any]


class ResponseContentPart(ServerEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


class ResponseDelta(ServerEvent):
    """Text, transcript and audio deltas share one shape."""

    type: Literal[
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ResponseTextDone(ServerEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


class ResponseTranscriptDone(ServerEvent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


class ResponseAudioDone(ServerEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class FunctionCallArgumentsDelta(ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class FunctionCallArgumentsDone(ServerEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class RateLimitsUpdated(ServerEvent):
    type: Literal["rate_limits.updated"] = "rate_limits.updated"
    rate_limits: list[dict[str, Any]]


class DtmfEventReceived(ServerEvent):
    """A keypad press on a phone line (SIP, Twilio)."""

    type: Literal["input_audio_buffer.dtmf_event_received"] = (
        "input_audio_buffer.dtmf_event_received"
    )
    event: str
    received_at: int
