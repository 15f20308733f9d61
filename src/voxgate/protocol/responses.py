"""One response's progress and the exact events it emits (PROTOCOL.md §11.2–11.7).

A `ResponseState` opens output items and content parts lazily, closes whatever is open when
the response ends for any reason, and produces the final ``response`` object with usage.
It emits ``conversation.item.*`` events only for responses in the default conversation.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import events as ev
from .audio_math import bytes_to_ms
from .commands import ResponseFinished, ResponsePlan, Usage
from .conversation import Conversation
from .items import AssistantMessage, FunctionCall, Item, OutputAudio, OutputText, to_wire
from .items import item_text as words_of
from .mcp_items import McpCall, McpCallStatus, McpToolError

Status = Literal["completed", "cancelled", "incomplete", "failed"]
# Tokens per second of audio, the way the hosted API bills it (PROTOCOL.md §10.3).
USER_AUDIO_TOKENS_PER_S = 10
ASSISTANT_AUDIO_TOKENS_PER_S = 20


@dataclass
class _OpenMessage:
    item: AssistantMessage
    output_index: int
    audio_bytes: int = 0


@dataclass
class ResponseState:
    plan: ResponsePlan
    conversation: Conversation
    count_tokens: Callable[[str], int]
    input_format: str
    output: list[Item] = field(default_factory=list)
    message: _OpenMessage | None = None
    calls: dict[str, tuple[FunctionCall, int]] = field(default_factory=dict)
    # Open MCP calls (mcp_flow.py), by item id.
    mcp_calls: dict[str, tuple[McpCall, int]] = field(default_factory=dict)
    text_out: list[str] = field(default_factory=list)
    audio_out_ms: float = 0.0
    llm_usage: tuple[int | None, int | None] = (None, None)

    @property
    def id(self) -> str:
        return self.plan.response_id

    @property
    def in_conversation(self) -> bool:
        return self.plan.conversation == "auto"

    # -- lifecycle ------------------------------------------------------------------------

    def created(self) -> list[ev.ServerEvent]:
        return [ev.ResponseLifecycle(type="response.created", response=self.wire("in_progress"))]

    def finish(
        self, status: Status, details: dict[str, Any] | None, model: str
    ) -> list[ev.ServerEvent | ResponseFinished]:
        """Close what is open, then the typed record of the response's usage, then its
        ``response.done`` (the record comes first so the runtime can hold that event)."""
        out: list[ev.ServerEvent | ResponseFinished] = []
        out += self.close_message(incomplete=status != "completed")
        for item_id in list(self.calls):
            out += self.close_call(item_id, incomplete=status != "completed")
        for item_id in list(self.mcp_calls):  # cut short: the call's result is unknown
            out += self._close_mcp_call(item_id)
        counts = self.counts()
        out.append(ResponseFinished(self.id, status, model, counts, self.messages()))
        done = self.wire(status, details, usage=counts)
        out.append(ev.ResponseLifecycle(type="response.done", response=done))
        return out

    # -- assistant message ----------------------------------------------------------------

    def _add_item(self, item: Item) -> list[ev.ServerEvent]:
        index = len(self.output)
        self.output.append(item)
        out: list[ev.ServerEvent] = [
            ev.ResponseOutputItem(
                type="response.output_item.added",
                response_id=self.id,
                output_index=index,
                item=to_wire(item),
            )
        ]
        if self.in_conversation:
            previous = self.conversation.insert(item)
            out.append(ev.ConversationItemAdded(item=to_wire(item), previous_item_id=previous))
        return out

    def _open_message(self, item_id: str) -> list[ev.ServerEvent]:
        if self.message is not None:
            return []
        item = AssistantMessage(id=item_id, role="assistant", status="in_progress", content=[])
        out = self._add_item(item)
        self.message = _OpenMessage(item, len(self.output) - 1)
        part: OutputAudio | OutputText = (
            OutputAudio(type="output_audio", transcript="")
            if self.plan.audio
            else OutputText(type="output_text", text="")
        )
        item.content.append(part)
        wire_part = (
            {"type": "audio", "transcript": ""} if self.plan.audio else {"type": "text", "text": ""}
        )
        out.append(self._part_event(self.message, "response.content_part.added", wire_part))
        return out

    def _part_event(self, msg: _OpenMessage, kind: str, part: dict[str, Any]) -> ev.ServerEvent:
        return ev.ResponseContentPart(
            type=kind,
            response_id=self.id,
            item_id=msg.item.id or "",
            output_index=msg.output_index,
            content_index=0,
            part=part,
        )

    def text(self, delta: str, new_item_id: str) -> list[ev.ServerEvent]:
        out = self._open_message(new_item_id)
        msg = self.message
        assert msg is not None
        part = msg.item.content[0]
        self.conversation.marks.setdefault(msg.item.id or "", []).append((msg.audio_bytes, delta))
        self.text_out.append(delta)
        if isinstance(part, OutputAudio):
            part.transcript = (part.transcript or "") + delta
            kind = "response.output_audio_transcript.delta"
        else:
            part.text += delta
            kind = "response.output_text.delta"
        out.append(self._delta(kind, delta))
        return out

    def audio(self, data: bytes, new_item_id: str) -> list[ev.ServerEvent]:
        out = self._open_message(new_item_id)
        msg = self.message
        assert msg is not None and msg.item.id is not None
        msg.audio_bytes += len(data)
        self.audio_out_ms += bytes_to_ms(self.plan.output_format, len(data))
        self.conversation.audio.setdefault(msg.item.id, bytearray()).extend(data)
        self.conversation.audio_format[msg.item.id] = self.plan.output_format
        out.append(self._delta("response.output_audio.delta", base64.b64encode(data).decode()))
        return out

    def _delta(self, kind: str, delta: str) -> ev.ResponseDelta:
        assert self.message is not None
        return ev.ResponseDelta(
            type=kind,
            response_id=self.id,
            item_id=self.message.item.id or "",
            output_index=self.message.output_index,
            content_index=0,
            delta=delta,
        )

    def close_message(self, *, incomplete: bool = False) -> list[ev.ServerEvent]:
        msg = self.message
        if msg is None:
            return []
        self.message = None
        item_id, index = msg.item.id or "", msg.output_index
        ids = {
            "response_id": self.id,
            "item_id": item_id,
            "output_index": index,
            "content_index": 0,
        }
        part = msg.item.content[0]
        out: list[ev.ServerEvent] = []
        if isinstance(part, OutputAudio):
            out.append(ev.ResponseAudioDone(**ids))
            out.append(ev.ResponseTranscriptDone(**ids, transcript=part.transcript or ""))
            wire_part = {"type": "audio", "transcript": part.transcript or ""}
        else:
            out.append(ev.ResponseTextDone(**ids, text=part.text))
            wire_part = {"type": "text", "text": part.text}
        out.append(self._part_event(msg, "response.content_part.done", wire_part))
        msg.item.status = "incomplete" if incomplete else "completed"
        return out + self._item_done(msg.item, index)

    def _item_done(self, item: Item, index: int) -> list[ev.ServerEvent]:
        out: list[ev.ServerEvent] = [
            ev.ResponseOutputItem(
                type="response.output_item.done",
                response_id=self.id,
                output_index=index,
                item=to_wire(item),
            )
        ]
        if self.in_conversation and item.id in self.conversation:
            previous = self.conversation.previous_of(item.id or "")
            out.append(ev.ConversationItemDone(item=to_wire(item), previous_item_id=previous))
        return out

    # -- function calls -------------------------------------------------------------------

    def open_call(self, item_id: str, call_id: str, name: str) -> list[ev.ServerEvent]:
        out = self.close_message()
        item = FunctionCall(
            id=item_id,
            type="function_call",
            name=name,
            call_id=call_id,
            arguments="",
            status="in_progress",
        )
        out += self._add_item(item)
        self.calls[item_id] = (item, len(self.output) - 1)
        return out

    def call_arguments(self, item_id: str, delta: str) -> list[ev.ServerEvent]:
        item, index = self.calls[item_id]
        item.arguments += delta
        self.text_out.append(delta)
        return [
            ev.FunctionCallArgumentsDelta(
                response_id=self.id,
                item_id=item_id,
                output_index=index,
                call_id=item.call_id or "",
                delta=delta,
            )
        ]

    def close_call(self, item_id: str, *, incomplete: bool = False) -> list[ev.ServerEvent]:
        item, index = self.calls.pop(item_id)
        item.status = "incomplete" if incomplete else "completed"
        out: list[ev.ServerEvent] = [
            ev.FunctionCallArgumentsDone(
                response_id=self.id,
                item_id=item_id,
                output_index=index,
                call_id=item.call_id or "",
                name=item.name,
                arguments=item.arguments,
            )
        ]
        return out + self._item_done(item, index)

    def _close_mcp_call(self, item_id: str) -> list[ev.ServerEvent]:
        item, index = self.mcp_calls.pop(item_id)
        item.error = McpToolError(
            type="tool_execution_error", message="the response ended before the call finished"
        )
        failed = McpCallStatus(type="response.mcp_call.failed", item_id=item_id, output_index=index)
        return [failed, *self._item_done(item, index)]

    # -- the response object --------------------------------------------------------------

    def wire(
        self, status: str, details: dict[str, Any] | None = None, *, usage: Usage | None = None
    ) -> dict[str, Any]:
        """The ``response`` object; with ``usage`` (the finished form) it lists the output."""
        plan = self.plan
        fmt: dict[str, Any] = {"type": plan.output_format}
        if plan.output_format == "audio/pcm":
            fmt["rate"] = 24000
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": [to_wire(i) for i in self.output] if usage is not None else [],
            "conversation_id": self.conversation.id if self.in_conversation else None,
            "output_modalities": plan.output_modalities,
            "max_output_tokens": plan.max_output_tokens or "inf",
            "audio": {"output": {"format": fmt, "voice": plan.voice}},
            "usage": usage_wire(usage) if usage is not None else None,
            "metadata": plan.metadata,
        }

    def counts(self) -> Usage:
        """Usage the way the hosted API reports it: text by tokenizer, audio by duration."""
        text_in = sum(self.count_tokens(words_of(i)) for i in self.plan.context)
        text_in += self.count_tokens(self.plan.instructions)
        audio_in = 0
        for item in self.plan.context:
            data = self.conversation.audio.get(item.id or "")
            if data:
                rate = (
                    ASSISTANT_AUDIO_TOKENS_PER_S
                    if isinstance(item, AssistantMessage)
                    else USER_AUDIO_TOKENS_PER_S
                )
                fmt = (
                    self.conversation.audio_format.get(item.id or "", self.plan.output_format)
                    if isinstance(item, AssistantMessage)
                    else self.input_format
                )
                audio_in += round(bytes_to_ms(fmt, len(data)) / 1000 * rate)
        llm_in, llm_out = self.llm_usage
        text_in = llm_in if llm_in is not None else text_in
        text_out = llm_out if llm_out is not None else self.count_tokens("".join(self.text_out))
        audio_out = round(self.audio_out_ms / 1000 * ASSISTANT_AUDIO_TOKENS_PER_S)
        spoken = sum(len(text) for _, text in self.messages()) if self.audio_out_ms else 0
        return Usage(
            input_text_tokens=text_in,
            input_audio_tokens=audio_in,
            output_text_tokens=text_out,
            output_audio_tokens=audio_out,
            audio_seconds_out=round(self.audio_out_ms / 1000, 3),
            characters_spoken=spoken,
        )

    def messages(self) -> tuple[tuple[str, str], ...]:
        """(item id, words) of each assistant message this response produced."""
        return tuple(
            (item.id or "", words_of(item))
            for item in self.output
            if isinstance(item, AssistantMessage)
        )


def usage_wire(u: Usage) -> dict[str, Any]:
    """The ``usage`` object of ``response.done``."""
    return {
        "total_tokens": u.total_tokens,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "input_token_details": {
            "text_tokens": u.input_text_tokens,
            "audio_tokens": u.input_audio_tokens,
            "image_tokens": 0,
            "cached_tokens": u.cached_tokens,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {
            "text_tokens": u.output_text_tokens,
            "audio_tokens": u.output_audio_tokens,
        },
    }
