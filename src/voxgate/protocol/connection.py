"""The sans-IO state machine of one Realtime session.

Feed it client frames (`receive`) and engine progress (`response_*`); it returns the server
events to send, in order, and the commands the runtime must carry out. It does no I/O and
reads no clock, so every rule of the protocol is testable with plain function calls.

Rules kept here:
- `session.created` is the first event; every server event has a fresh event id;
- a client error becomes one `error` event echoing the client's `event_id`, and changes nothing;
- at most one response writes to the default conversation; out-of-band ones may run beside it;
- every `response.created` gets exactly one `response.done`, whatever ends the response;
- engine progress for a response that has already ended is dropped.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from typing import Any, assert_never

from . import events as ev
from . import mcp_flow
from .audio_items import needs_transcript, take_audio, take_inline_audio
from .audio_math import bytes_to_ms, ms_to_bytes
from .commands import (
    CancelResponse,
    ClearOutputAudio,
    Command,
    EndOfAudio,
    InputAudio,
    PlayAudio,
    StartResponse,
    TranscribeItem,
    UserInput,
)
from .conversation import Conversation
from .errors import ProtocolError, server_bug
from .guard import ConfigGuard
from .ids import new_id
from .input_buffer import InputAudioBuffer
from .items import (
    AssistantMessage,
    FunctionCallOutput,
    Item,
    OutputAudio,
    UserMessage,
    item_text,
    parse_item,
    to_wire,
)
from .items import InputAudio as InputAudioPart
from .limits import ConnectionLimits, ConversationBudget
from .mcp import McpState
from .planning import plan_response
from .prompts import StoredPrompt
from .response_params import parse_response_params
from .responses import ResponseState, Status
from .session import SessionConfig, new_session
from .tool_items import check_approval, is_approval
from .transcription import (
    TranscriptionSessionConfig,
    apply_session_update,
    check_event,
    new_transcription_session,
)

log = logging.getLogger(__name__)
Output = ev.ServerEvent | Command
# conversation.item.retrieved must stay under the 8 MiB a client (agents-py) accepts.
MAX_RETRIEVED_AUDIO_BYTES = 5 * 1024 * 1024


class RealtimeConnection:
    def __init__(
        self,
        *,
        model: str | None = None,
        expires_at: int = 0,
        count_tokens: Callable[[str], int] = lambda text: len(text.split()),
        server_playout: bool = False,
        instructions: str | None = None,
        max_buffer_bytes: int = 24000 * 2 * 600,
        intent: str | None = None,
        prompts: Mapping[str, StoredPrompt] | None = None,
        transcription_logprobs: bool = False,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.session_id = new_id("sess")
        self.config: SessionConfig = new_session(model, instructions)
        # Set for transcription sessions (see transcription.py): no responses, ever.
        self.transcription: TranscriptionSessionConfig | None = None
        self.prompts: Mapping[str, StoredPrompt] = prompts or {}
        # Whether the recogniser gives token log probabilities: the logprobs include is
        # accepted only then.
        self.transcription_logprobs = transcription_logprobs
        if intent == "transcription":
            self.config, self.transcription = new_transcription_session(self.config)
        self.expires_at = expires_at
        # Vetoes session and response configuration (policies, client-secret bindings).
        self.guard: ConfigGuard | None = None
        self.mcp = McpState()  # MCP servers and their tool listings (mcp_flow.py)
        self.conversation = Conversation(id=new_id("conv"))
        self.budget = ConversationBudget(limits or ConnectionLimits())
        self.responses: dict[str, ResponseState] = {}
        self.active_response_id: str | None = None
        self.audio_produced = False
        # Set when the first response starts: from then on the model is fixed.
        self.model_locked = False
        self.server_playout = server_playout
        self.input = InputAudioBuffer(max_buffer_bytes)
        # The buffered bytes themselves, under the name the runtime and tests read.
        self.input_buffer = self.input.data
        self._count_tokens = count_tokens
        # Server-side playout: responses whose audio reached the peer's queue and has not
        # yet stopped or been cleared.
        self.playing: set[str] = set()
        # Items given inline to a response (not in the conversation) whose audio is being
        # transcribed; each leaves when its transcript (or failure) arrives.
        self._inline: dict[str, UserMessage] = {}

    @property
    def input_audio_ms(self) -> float:
        return self.input.total_ms

    # -- client side ----------------------------------------------------------------------

    def start(self) -> list[Output]:
        return [self.session_created(), *mcp_flow.sync(self)]

    def session_created(self) -> ev.SessionCreated:
        """The first event of every client connection, sideband ones included."""
        return ev.SessionCreated(session=self._session_wire())

    def receive(self, raw: str | bytes) -> list[Output]:
        event, client_event_id, error = ev.parse_client_event(raw)
        if event is None:
            assert error is not None
            return [self.error(error, client_event_id)]
        try:
            return self._dispatch(event)
        except ProtocolError as exc:
            return [self.error(exc, event.event_id)]
        except Exception:  # our bug: it costs the client this one event, not the session
            log.exception("client event %s could not be applied", event.type)
            return [self.error(server_bug(event.type), event.event_id)]

    def error(self, exc: ProtocolError, client_event_id: str | None = None) -> ev.Error:
        return ev.Error(error=exc.to_error(client_event_id))

    def _dispatch(self, event: ev.ClientEvent) -> list[Output]:
        if self.transcription is not None:
            check_event(event)
        match event:
            case ev.SessionUpdate():
                return self._session_update(event.session)
            case ev.InputAudioBufferAppend():
                return self._append(event.audio)
            case ev.InputAudioBufferCommit():
                return self.commit()
            case ev.InputAudioBufferClear():
                self.input_buffer.clear()
                return [ev.InputAudioBufferCleared()]
            case ev.OutputAudioBufferClear():
                return self._clear_output(event.response_id)
            case ev.ConversationItemCreate():
                return self._item_create(event.item, event.previous_item_id)
            case ev.ConversationItemRetrieve():
                return [ev.ConversationItemRetrieved(item=self._item_with_audio(event.item_id))]
            case ev.ConversationItemDelete():
                self.conversation.delete(event.item_id)
                return [ev.ConversationItemDeleted(item_id=event.item_id)]
            case ev.ConversationItemTruncate():
                return self.truncate(event.item_id, event.content_index, event.audio_end_ms)
            case ev.ResponseCreate():
                return self.create_response(event.response)
            case ev.ResponseCancel():
                return self._client_cancel(event.response_id)
            case _:
                assert_never(event)

    def _session_wire(self) -> dict[str, Any]:
        config = self.transcription or self.config
        return config.to_wire(session_id=self.session_id, expires_at=self.expires_at)

    def configure(self, patch: dict[str, Any]) -> None:
        """Apply a session configuration before the session starts (the ``session`` a call
        was created with); raises ProtocolError like ``session.update`` would."""
        config, transcription = apply_session_update(
            self.config,
            self.transcription,
            patch,
            audio_produced=self.audio_produced,
            model_locked=self.model_locked,
            conversation_empty=len(self.conversation) == 0,
            prompts=self.prompts,
            logprobs=self.transcription_logprobs,
        )
        if self.guard is not None:
            self.guard.check_session(self.config, config, patch)
        self.config, self.transcription = config, transcription

    def _session_update(self, patch: dict[str, Any]) -> list[Output]:
        self.configure(patch)
        return [ev.SessionUpdated(session=self._session_wire()), *mcp_flow.sync(self)]

    # -- input audio ----------------------------------------------------------------------

    @property
    def input_format(self) -> str:
        return self.config.audio.input.format.type

    def _append(self, audio: str) -> list[Output]:
        return [InputAudio(self.input.append_encoded(audio, self.input_format), self.input_format)]

    def append_track_audio(self, data: bytes) -> list[Output]:
        """Audio from a media track in the session's input format: the same buffer as
        ``input_audio_buffer.append`` (input_buffer.py says what happens when it is full)."""
        self.input.append_track(data, self.input_format)
        return [InputAudio(data, self.input_format)]

    def commit(self, item_id: str | None = None) -> list[Output]:
        """The client's commit: the whole input buffer becomes a user audio item."""
        return self._commit_audio(self.input.take_all(self.input_format), item_id or new_id("item"))

    def _commit_span(self, item_id: str, start_ms: float, end_ms: float) -> list[Output]:
        """Commit the audio of a detected turn (input_buffer.py keeps the rest)."""
        audio = self.input.take_span(start_ms, end_ms, self.input_format)
        return self._commit_audio(audio, item_id)

    def _commit_audio(self, audio: bytes, item_id: str) -> list[Output]:
        item = UserMessage(
            id=item_id,
            role="user",
            status="completed",
            content=[InputAudioPart(type="input_audio", transcript=None)],
        )
        previous = self.conversation.insert(item)
        self.conversation.audio[item_id] = bytearray(audio)
        self.budget.trim_audio(self.conversation)
        return [
            ev.InputAudioBufferCommitted(item_id=item_id, previous_item_id=previous),
            ev.ConversationItemAdded(item=to_wire(item), previous_item_id=previous),
            ev.ConversationItemDone(item=to_wire(item), previous_item_id=previous),
            # Always: the language model hears the user through the transcript. Whether the
            # client is told about it is decided when the transcript arrives.
            TranscribeItem(item_id, audio, self.input_format),
        ]

    # -- turn detection: the session's detector decides, these put it on the wire ---------

    def speech_started(self, item_id: str, audio_start_ms: int) -> list[Output]:
        out: list[Output] = [
            ev.InputAudioBufferSpeechStarted(audio_start_ms=audio_start_ms, item_id=item_id)
        ]
        turns = self.config.audio.input.turn_detection
        if turns is None or not turns.interrupt_response:
            return out
        if self.active_response_id:
            out += self.cancel_response(self.active_response_id, "turn_detected")
        if self.server_playout:
            # The reply may be done generating and still playing: stop what the user hears.
            out.append(ClearOutputAudio(None))
        return out

    def speech_stopped(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> list[Output]:
        """End of a detected turn: say so, commit its audio, and answer if configured."""
        return [
            ev.InputAudioBufferSpeechStopped(audio_end_ms=audio_end_ms, item_id=item_id),
            *self._commit_span(item_id, audio_start_ms, audio_end_ms),
            *self._auto_response(),
        ]

    def idle_timeout(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> list[Output]:
        """No speech for ``idle_timeout_ms``: the silent audio is committed as the user's
        turn and the model answers it (typically by asking whether the user is still there)."""
        return [
            ev.InputAudioBufferTimeoutTriggered(
                audio_start_ms=audio_start_ms, audio_end_ms=audio_end_ms, item_id=item_id
            ),
            *self._commit_span(item_id, audio_start_ms, audio_end_ms),
            *self._auto_response(),
        ]

    def _auto_response(self) -> list[Output]:
        turns = self.config.audio.input.turn_detection
        # With interrupt_response off, a turn during a response is committed but not answered
        # on its own: the conversation can hold only one response at a time.
        if turns is None or not turns.create_response or self.active_response_id is not None:
            return []
        if self.transcription is not None:  # transcription sessions never answer
            return []
        try:
            return self.create_response(None)
        except ProtocolError as exc:  # e.g. out-of-band responses fill every slot
            return [self.error(exc)]

    # -- input transcription --------------------------------------------------------------

    def transcription_done(
        self,
        item_id: str,
        transcript: str,
        seconds: float,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> list[Output]:
        part = self._input_audio_part(item_id)
        if part is None:
            return []  # the item was deleted meanwhile
        part.transcript = transcript
        billed = self.config.audio.input.transcription
        record = UserInput(
            item_id, transcript, round(seconds, 3), billed.model or "" if billed else None
        )
        if billed is None:
            return [record]
        usage = {"type": "duration", "seconds": round(seconds, 3)}
        out: list[Output] = [record]
        if transcript:
            out.append(ev.TranscriptionDelta(item_id=item_id, delta=transcript))
        out.append(
            ev.TranscriptionCompleted(
                item_id=item_id, transcript=transcript, usage=usage, logprobs=logprobs
            )
        )
        return out

    def transcription_failed(self, item_id: str, message: str) -> list[Output]:
        if self._input_audio_part(item_id) is None:
            return []
        if self.config.audio.input.transcription is None:
            return []
        error = {"type": "transcription_error", "code": "transcription_failed", "message": message}
        return [ev.TranscriptionFailed(item_id=item_id, error=error)]

    def _input_audio_part(self, item_id: str) -> InputAudioPart | None:
        try:
            item: Item = self._inline.pop(item_id, None) or self.conversation.get(item_id)
        except ProtocolError:
            return None
        if not isinstance(item, UserMessage):
            return None
        return next((p for p in item.content if isinstance(p, InputAudioPart)), None)

    def _clear_output(self, response_id: str | None) -> list[Output]:
        if not self.server_playout:
            raise ProtocolError(
                "output_audio_buffer.clear is only supported on WebRTC and SIP connections; "
                "over WebSocket the client plays the audio itself.",
                code="unsupported_event",
                param="type",
            )
        return [ClearOutputAudio(response_id)]

    def output_audio_cleared(
        self, response_id: str, item_id: str, content_index: int, played_ms: int
    ) -> list[Output]:
        """Playout was cut short: say so, and truncate the item to what the user heard (on
        WebRTC and SIP the server knows that, so the client need not truncate)."""
        self.playing.discard(response_id)
        out: list[Output] = [
            ev.OutputAudioBufferEvent(type="output_audio_buffer.cleared", response_id=response_id)
        ]
        if item_id in self.conversation.audio:
            length_ms = bytes_to_ms(
                self._response_format_of(item_id), len(self.conversation.audio[item_id])
            )
            out += self.truncate(item_id, content_index, min(played_ms, int(length_ms)))
        return out

    def output_audio_stopped(self, response_id: str) -> list[Output]:
        """All of a finished response's audio has played."""
        if response_id not in self.playing:
            return []
        self.playing.discard(response_id)
        return [
            ev.OutputAudioBufferEvent(type="output_audio_buffer.stopped", response_id=response_id)
        ]

    # -- conversation items ---------------------------------------------------------------

    def _item_create(self, raw: dict[str, Any], previous_item_id: str | None) -> list[Output]:
        item = parse_item(raw)
        audio = self._check_new_item(item)
        self.budget.check_new_item(self.conversation, item, len(audio))
        item.id = item.id or new_id("item")
        item.status = item.status or "completed"
        approval = check_approval(self.conversation, item) if is_approval(item) else None
        previous = self.conversation.insert(item, previous_item_id)
        out: list[Output] = []
        if isinstance(item, UserMessage) and (words := item_text(item)):
            out.append(UserInput(item.id, words))
        out += [
            ev.ConversationItemAdded(item=to_wire(item), previous_item_id=previous),
            ev.ConversationItemDone(item=to_wire(item), previous_item_id=previous),
            *([approval] if approval is not None else []),
        ]
        if audio:
            self.conversation.audio[item.id] = bytearray(audio)
            if needs_transcript(item):  # heard like a committed turn (audio_items.py)
                out.append(TranscribeItem(item.id, audio, self.input_format))
        return out

    def _check_new_item(self, item: Item) -> bytes:
        """Rules a client-made item must follow; returns its decoded audio, if any."""
        if isinstance(item, AssistantMessage) and any(
            isinstance(p, OutputAudio) for p in item.content
        ):
            raise ProtocolError(
                "Clients cannot create assistant audio; use content of type 'output_text'.",
                param="item.content",
            )
        if (
            isinstance(item, FunctionCallOutput)
            and item.call_id not in self.conversation.call_ids()
        ):
            raise ProtocolError(
                f"Tool call ID '{item.call_id}' not found in conversation.",
                param="item.call_id",
            )
        mcp_flow.check_client_item(self, item)
        return take_audio(item, "item")

    def _item_with_audio(self, item_id: str) -> dict[str, Any]:
        item = self.conversation.get(item_id)
        wire = to_wire(item)
        audio = self.conversation.audio.get(item_id)
        if audio and len(audio) <= MAX_RETRIEVED_AUDIO_BYTES:
            for part in wire.get("content", []):
                if part["type"] in ("input_audio", "output_audio"):
                    part["audio"] = base64.b64encode(audio).decode()
                    break
        return wire

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> list[Output]:
        item = self.conversation.get(item_id)
        part = (
            item.content[content_index]
            if isinstance(item, AssistantMessage) and content_index < len(item.content)
            else None
        )
        audio = self.conversation.audio.get(item_id)
        if not isinstance(part, OutputAudio) or audio is None:
            raise ProtocolError(
                "Only model output audio messages can be truncated.",
                code="unsupported_content_type",
                param="item_id",
            )
        fmt = self._response_format_of(item_id)
        length_ms = bytes_to_ms(fmt, len(audio))
        if audio_end_ms > length_ms + 1:
            raise ProtocolError(
                f"Audio content of {length_ms:.0f}ms is already shorter than {audio_end_ms}ms.",
                code="invalid_value",
                param="audio_end_ms",
            )
        cut = ms_to_bytes(fmt, audio_end_ms)
        del audio[cut:]
        marks = self.conversation.marks.get(item_id, [])
        part.transcript = "".join(text for at, text in marks if at < cut)
        return [
            ev.ConversationItemTruncated(
                item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
            )
        ]

    def _response_format_of(self, item_id: str) -> str:
        # The format the audio was produced in, even after its response ended.
        return self.conversation.audio_format.get(item_id, self.config.audio.output.format.type)

    # -- responses: creation and cancellation ---------------------------------------------

    def create_response(self, raw: dict[str, Any] | None = None) -> list[Output]:
        params = parse_response_params(raw)
        self.budget.check_response_slot(len(self.responses))
        if self.guard is not None:
            self.guard.check_response(self.config, params)
        if params.conversation == "auto" and self.active_response_id is not None:
            raise ProtocolError(
                "Conversation already has an active response in progress: "
                f"{self.active_response_id}. Wait until the response is finished before "
                "creating a new one.",
                code="conversation_already_has_active_response",
            )
        plan = plan_response(
            params,
            self.config,
            self.conversation,
            audio_produced=self.audio_produced,
            prompts=self.prompts,
        )
        plan = mcp_flow.with_mcp(self, plan)
        inline = self._transcribe_inline(plan.context)
        state = ResponseState(plan, self.conversation, self._count_tokens, self.input_format)
        self.responses[plan.response_id] = state
        self.model_locked = True
        if plan.conversation == "auto":
            self.active_response_id = plan.response_id
        # Transcription is asked for first, so the response waits for those words.
        return [*state.created(), *inline, StartResponse(plan)]

    def _transcribe_inline(self, context: list[Item]) -> list[Output]:
        out: list[Output] = []
        for item, audio in take_inline_audio(context):
            self._inline[item.id or ""] = item
            out.append(TranscribeItem(item.id or "", audio, self.input_format))
        return out

    def _client_cancel(self, response_id: str | None) -> list[Output]:
        target = response_id or self.active_response_id
        if target is None or target not in self.responses:
            raise ProtocolError(
                "Cancellation failed: no active response found.",
                code="response_cancel_not_active",
                param="response_id" if response_id else None,
            )
        return self.cancel_response(target, "client_cancelled")

    def cancel_response(self, response_id: str, reason: str) -> list[Output]:
        """End a running response as cancelled (client request or barge-in)."""
        if response_id not in self.responses:
            return []
        details = {"type": "cancelled", "reason": reason}
        return [
            *self.finish_response(response_id, "cancelled", details),
            CancelResponse(response_id),
        ]

    # -- responses: engine progress -------------------------------------------------------

    def response_text(self, response_id: str, delta: str) -> list[Output]:
        state = self.responses.get(response_id)
        return [*state.text(delta, new_id("item"))] if state and delta else []

    def response_audio(self, response_id: str, data: bytes) -> list[Output]:
        state = self.responses.get(response_id)
        if state is None or not data:
            return []
        self.audio_produced = True
        out: list[Output] = [*state.audio(data, new_id("item"))]
        if not self.server_playout:
            return out
        # Audio rides the peer's media track, not the event stream.
        delta = out.pop()
        assert isinstance(delta, ev.ResponseDelta)
        if response_id not in self.playing:
            self.playing.add(response_id)
            out.append(
                ev.OutputAudioBufferEvent(
                    type="output_audio_buffer.started", response_id=response_id
                )
            )
        out.append(
            PlayAudio(
                response_id, delta.item_id, delta.content_index, data, state.plan.output_format
            )
        )
        return out

    def response_message_done(self, response_id: str) -> list[Output]:
        state = self.responses.get(response_id)
        return [*state.close_message()] if state else []

    def response_call(
        self, response_id: str, item_id: str, call_id: str, name: str
    ) -> list[Output]:
        """Open a function call item (the engine chose its ids)."""
        state = self.responses.get(response_id)
        return [*state.open_call(item_id, call_id, name)] if state else []

    def response_call_arguments(self, response_id: str, item_id: str, delta: str) -> list[Output]:
        state = self.responses.get(response_id)
        if state is None or item_id not in state.calls:
            return []
        return [*state.call_arguments(item_id, delta)]

    def response_call_done(self, response_id: str, item_id: str) -> list[Output]:
        state = self.responses.get(response_id)
        if state is None or item_id not in state.calls:
            return []
        return [*state.close_call(item_id)]

    def finish_response(
        self,
        response_id: str,
        status: Status = "completed",
        details: dict[str, Any] | None = None,
        llm_usage: tuple[int | None, int | None] = (None, None),
    ) -> list[Output]:
        """End a response: flush open parts, then its one `response.done`."""
        state = self.responses.pop(response_id, None)
        if state is None:
            return []
        if self.active_response_id == response_id:
            self.active_response_id = None
        state.llm_usage = llm_usage
        out: list[Output] = [*state.finish(status, details, self.config.model)]
        self.budget.trim_audio(self.conversation)
        if response_id in self.playing:
            out.append(EndOfAudio(response_id))
        return out
