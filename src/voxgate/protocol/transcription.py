"""Transcription sessions (``?intent=transcription``, ``session.type: "transcription"``).

A transcription session turns speech into text and nothing else: turn detection commits the
user's audio, every committed item is transcribed and the transcript events are always sent;
no response is ever created and no model answers.

Rules:
- the session object is the SDK's ``RealtimeTranscriptionSessionCreateRequest``: ``type``,
  ``audio.input`` (format, noise_reduction, transcription, turn_detection) and ``include``;
  anything else (``instructions``, ``tools``, ``audio.output`` …) is an unknown parameter;
- ``audio.input.transcription`` cannot be ``null``: transcribing is the session's purpose;
- ``idle_timeout_ms`` is refused: its timeout exists to make the model answer;
- the session type may change (realtime ↔ transcription) only while the conversation is
  empty; afterwards the conversation would not fit the new type;
- response and conversation-editing events are refused with ``unsupported_event``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import events as ev
from . import unsupported
from .errors import ProtocolError, from_validation_error
from .prompts import StoredPrompt, resolve
from .session import AudioInput, SessionConfig, Transcription, _merge, apply_update

# Echoed as the transcription model until the client names one; the server's own recogniser
# does the work whatever the name (docs/protocol.md).
DEFAULT_TRANSCRIPTION_MODEL = "whisper-1"
_ECHO_ONLY = ("id", "object", "expires_at")
# What a transcription session accepts besides session.update.
_ALLOWED_EVENTS = (
    ev.SessionUpdate,
    ev.InputAudioBufferAppend,
    ev.InputAudioBufferCommit,
    ev.InputAudioBufferClear,
    ev.ConversationItemRetrieve,
    ev.ConversationItemDelete,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_input() -> AudioInput:
    return AudioInput(transcription=Transcription(model=DEFAULT_TRANSCRIPTION_MODEL))


class TranscriptionAudio(_Strict):
    input: AudioInput = Field(default_factory=_default_input)


class TranscriptionSessionConfig(_Strict):
    """The full, effective configuration of a ``transcription`` session."""

    type: Literal["transcription"] = "transcription"
    audio: TranscriptionAudio = Field(default_factory=TranscriptionAudio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None

    def to_wire(self, *, session_id: str, expires_at: int) -> dict[str, Any]:
        body = self.model_dump(mode="json")
        return {
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": expires_at,
            **body,
        }


def _validate(
    current: TranscriptionSessionConfig, patch: dict[str, Any], logprobs: bool = False
) -> TranscriptionSessionConfig:
    patch = {k: v for k, v in patch.items() if k not in _ECHO_ONLY}
    unsupported.check(patch, "session", logprobs=logprobs)
    try:
        merged = TranscriptionSessionConfig.model_validate(
            _merge(current.model_dump(mode="json"), patch)
        )
    except ValidationError as exc:
        raise from_validation_error(exc, "session") from None
    audio_in = merged.audio.input
    if audio_in.transcription is None:
        raise ProtocolError(
            "A transcription session needs 'session.audio.input.transcription' (an object, "
            "e.g. {}); it cannot be null.",
            param="session.audio.input.transcription",
        )
    turns = audio_in.turn_detection
    if turns is not None and getattr(turns, "idle_timeout_ms", None) is not None:
        raise ProtocolError(
            "'idle_timeout_ms' makes the model answer after a silence; transcription sessions "
            "have no responses. Leave it out.",
            code="unknown_parameter",
            param="session.audio.input.turn_detection.idle_timeout_ms",
        )
    return merged


def _with_input(config: SessionConfig, transcription: TranscriptionSessionConfig) -> SessionConfig:
    """The realtime view of a transcription session: its input settings, which turn
    detection and transcription read, are the transcription session's own."""
    audio = config.audio.model_copy(update={"input": transcription.audio.input})
    return config.model_copy(update={"audio": audio, "include": transcription.include})


def apply_session_update(
    config: SessionConfig,
    current: TranscriptionSessionConfig | None,
    patch: Any,
    *,
    audio_produced: bool,
    model_locked: bool,
    conversation_empty: bool,
    prompts: Mapping[str, StoredPrompt] | None = None,
    logprobs: bool = False,
) -> tuple[SessionConfig, TranscriptionSessionConfig | None]:
    """The session after ``session.update``: the realtime configuration, and the
    transcription configuration when the session is (now) a transcription session. A
    realtime session's ``prompt`` must resolve against ``prompts`` (see prompts.py)."""
    kind = patch.get("type") if isinstance(patch, dict) else None
    was = "realtime" if current is None else "transcription"
    if kind in ("realtime", "transcription") and kind != was and not conversation_empty:
        raise ProtocolError(
            f"This is a {was} session and its conversation has items; session.type cannot "
            f"change to '{kind}' now. Open a new session for {kind}.",
            param="session.type",
        )
    if kind != "transcription":
        config = apply_update(
            config,
            patch,
            audio_produced=audio_produced,
            model_locked=model_locked,
            logprobs=logprobs,
        )
        if config.prompt is not None:
            resolve(config.prompt, prompts or {}, "session.prompt")
        return config, None
    assert isinstance(patch, dict)
    if current is None:
        # From a realtime session: keep the input settings the client already chose.
        current = TranscriptionSessionConfig(audio=TranscriptionAudio(input=config.audio.input))
        if current.audio.input.transcription is None:
            current.audio.input = current.audio.input.model_copy(
                update={"transcription": Transcription(model=DEFAULT_TRANSCRIPTION_MODEL)}
            )
    transcription = _validate(current, patch, logprobs)
    return _with_input(config, transcription), transcription


def new_transcription_session(
    config: SessionConfig,
) -> tuple[SessionConfig, TranscriptionSessionConfig]:
    """A transcription session with the server defaults (``?intent=transcription``)."""
    transcription = TranscriptionSessionConfig()
    return _with_input(config, transcription), transcription


def check_event(event: ev.ClientEvent) -> None:
    """Refuse the client events that have no meaning without responses."""
    if not isinstance(event, _ALLOWED_EVENTS):
        raise ProtocolError(
            f"'{event.type}' is not available in a transcription session: it transcribes "
            "input audio and creates no responses. Use a realtime session (session.type "
            "'realtime') for a model that answers.",
            code="unsupported_event",
            param="type",
        )
