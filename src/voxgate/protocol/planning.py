"""What a `response.create` becomes: the plan a response runs on, made from its parameters,
the session configuration and the conversation. Pure functions; the connection keeps the
state and the rules about when a response may start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .commands import ResponsePlan
from .conversation import Conversation
from .errors import ProtocolError
from .ids import new_id
from .items import Item, parse_item
from .model_settings import model_settings
from .prompts import StoredPrompt
from .response_params import ResponseParams
from .session import SessionConfig


def plan_response(
    params: ResponseParams,
    session: SessionConfig,
    conversation: Conversation,
    *,
    audio_produced: bool,
    prompts: Mapping[str, StoredPrompt],
) -> ResponsePlan:
    """The response's settings: its own parameters over the session's."""
    out = params.audio.output if params.audio and params.audio.output else None
    voice = (out.voice if out and out.voice else None) or session.audio.output.voice
    voice_name = voice if isinstance(voice, str) else voice.get("id", "")
    if audio_produced and voice_name != session.voice:
        raise ProtocolError(
            "Cannot update a conversation's voice if assistant audio is present.",
            code="cannot_update_voice",
            param="response.audio.output.voice",
        )
    tools = params.tools if params.tools is not None else session.tools
    choice = params.tool_choice if params.tool_choice is not None else session.tool_choice
    limit = params.max_output_tokens or session.max_output_tokens
    return ResponsePlan(
        response_id=new_id("resp"),
        conversation="none" if params.conversation == "none" else "auto",
        output_modalities=list(params.output_modalities or session.output_modalities),
        voice=voice_name,
        output_format=(out.format if out and out.format else session.audio.output.format).type,
        speed=session.audio.output.speed,
        tools=[t.model_dump(mode="json", exclude_none=True) for t in tools if t.type == "function"],
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(mode="json"),
        max_output_tokens=None if limit == "inf" else int(limit),
        context=response_context(params.input, conversation),
        metadata=params.metadata,
        **model_settings(params, session, prompts),
    )


def response_context(
    entries: list[dict[str, Any]] | None, conversation: Conversation
) -> list[Item]:
    """The items a response sees: the conversation, or the ``input`` it was given (item
    references resolved, new items given ids)."""
    if entries is None:
        return list(conversation)
    items: list[Item] = []
    for i, raw in enumerate(entries):
        param = f"response.input[{i}]"
        if raw.get("type") == "item_reference":
            if not isinstance(raw.get("id"), str):
                raise ProtocolError(
                    f"Missing required parameter: '{param}.id'.",
                    code="missing_required_parameter",
                    param=f"{param}.id",
                )
            items.append(conversation.get(raw["id"], param=f"{param}.id"))
        else:
            item = parse_item(raw, param)
            item.id = item.id or new_id("item")
            items.append(item)
    return items
