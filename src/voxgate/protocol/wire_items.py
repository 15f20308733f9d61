"""Upstream items as voxgate's own (`carry.ConversationMirror` reads them): audio parts keep
their transcripts only (the bytes, where kept, live beside the items), and the words of an
item pieced together from deltas survive a later version of it that lacks them."""

from __future__ import annotations

from typing import Any

from .items import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputImage,
    InputText,
    Item,
    OutputAudio,
    OutputText,
    SystemMessage,
    UserMessage,
    item_text,
)


def item_from_wire(raw: Any) -> Item | None:
    """An upstream item as one of ours, audio as its transcript; None for kinds the local
    pipeline cannot hold (MCP items and the like) — their results are in later items."""
    if not isinstance(raw, dict):
        return None
    kind, ident, status = raw.get("type"), raw.get("id"), raw.get("status")
    common: dict[str, Any] = {"id": ident, "status": status if status else None}
    if kind == "function_call":
        return FunctionCall(
            type="function_call",
            name=str(raw.get("name") or ""),
            arguments=str(raw.get("arguments") or ""),
            call_id=raw.get("call_id"),
            **common,
        )
    if kind == "function_call_output":
        return FunctionCallOutput(
            type="function_call_output",
            call_id=str(raw.get("call_id") or ""),
            output=str(raw.get("output") or ""),
            **common,
        )
    if kind != "message":
        return None
    content = [p for p in raw.get("content") or [] if isinstance(p, dict)]
    role = raw.get("role")
    if role == "assistant":
        return AssistantMessage(role="assistant", content=_assistant_parts(content), **common)
    if role == "user":
        return UserMessage(role="user", content=_user_parts(content), **common)
    if role == "system":
        texts = [InputText(type="input_text", text=str(p.get("text") or "")) for p in content]
        return SystemMessage(role="system", content=texts, **common)
    return None


def _user_parts(content: list[dict[str, Any]]) -> list[InputText | InputAudio | InputImage]:
    parts: list[InputText | InputAudio | InputImage] = []
    for p in content:
        if p.get("type") == "input_text":
            parts.append(InputText(type="input_text", text=str(p.get("text") or "")))
        elif p.get("type") == "input_audio":
            parts.append(InputAudio(type="input_audio", transcript=p.get("transcript")))
        elif p.get("type") == "input_image" and isinstance(p.get("image_url"), str):
            parts.append(InputImage(type="input_image", image_url=p["image_url"]))
    return parts


def _assistant_parts(content: list[dict[str, Any]]) -> list[OutputText | OutputAudio]:
    parts: list[OutputText | OutputAudio] = []
    for p in content:
        if p.get("type") in ("output_text", "text"):
            parts.append(OutputText(type="output_text", text=str(p.get("text") or "")))
        elif p.get("type") in ("output_audio", "audio"):
            parts.append(OutputAudio(type="output_audio", transcript=p.get("transcript")))
    return parts


def has_words(item: Item) -> bool:
    return bool(item_text(item))


def keep_words(old: Item, new: Item) -> Item:
    """A later version of an item; words we already had stay where the new one has none
    (an upstream's ``done`` may come before a transcript we pieced together)."""
    if isinstance(old, AssistantMessage) and isinstance(new, AssistantMessage):
        if not new.content and old.content:
            new.content = old.content
        for was, now in zip(old.content, new.content, strict=False):
            if isinstance(was, OutputAudio) and isinstance(now, OutputAudio):
                now.transcript = now.transcript if now.transcript else was.transcript
    if isinstance(old, UserMessage) and isinstance(new, UserMessage):
        for was_u, now_u in zip(old.content, new.content, strict=False):
            if isinstance(was_u, InputAudio) and isinstance(now_u, InputAudio):
                now_u.transcript = now_u.transcript if now_u.transcript else was_u.transcript
    return new


def append_words(item: AssistantMessage, delta: str, *, audio: bool) -> None:
    for part in item.content:
        if audio and isinstance(part, OutputAudio):
            part.transcript = (part.transcript or "") + delta
            return
        if not audio and isinstance(part, OutputText):
            part.text += delta
            return
    if audio:
        item.content.append(OutputAudio(type="output_audio", transcript=delta))
    else:
        item.content.append(OutputText(type="output_text", text=delta))
