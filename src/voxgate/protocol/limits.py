"""Per-session bounds on what a client can make the server hold or do (docs/limits.md).

Policy:
- a client-made item (``conversation.item.create``) larger than `max_item_bytes`, or one that
  would take the conversation past `max_items` or `max_bytes`, is refused with an error that
  says which bound and how to make room (delete items);
- audio the server stores for turns and replies is kept for `conversation.item.retrieve` and
  truncation only: when the conversation passes `max_bytes`, the oldest items' stored audio is
  dropped first (their transcripts stay, so the model loses nothing);
- at most `max_responses` responses run at once per session, out-of-band ones included.

Sizes are measured as the item's JSON plus its stored audio, in bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .conversation import Conversation
from .errors import ProtocolError
from .items import Item, to_wire

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_items: int = 4096
    max_bytes: int = 64 * MIB
    max_item_bytes: int = 8 * MIB
    max_responses: int = 4


@dataclass
class ConversationBudget:
    """Tracks the size of one conversation against its limits."""

    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # JSON size per item id, measured when first seen (items change little afterwards).
    _sizes: dict[str, int] = field(default_factory=dict)

    def item_bytes(self, item: Item, audio_bytes: int = 0) -> int:
        return len(json.dumps(to_wire(item))) + audio_bytes

    def total(self, conversation: Conversation) -> int:
        if len(self._sizes) > 2 * len(conversation) + 64:  # forget deleted items
            self._sizes = {str(i.id): s for i in conversation if (s := self._sizes.get(i.id or ""))}
        text = 0
        for item in conversation:
            assert item.id is not None
            size = self._sizes.get(item.id)
            if size is None:
                size = self._sizes[item.id] = self.item_bytes(item)
            text += size
        return text + sum(len(a) for a in conversation.audio.values())

    def check_new_item(self, conversation: Conversation, item: Item, audio_bytes: int) -> None:
        """Raise ProtocolError if a client may not add ``item`` now."""
        limits = self.limits
        size = self.item_bytes(item, audio_bytes)
        if size > limits.max_item_bytes:
            raise ProtocolError(
                f"The item is {size} bytes; an item may have at most {limits.max_item_bytes} "
                "bytes (text and audio together). Split it into several items.",
                code="item_too_large",
                param="item",
            )
        if len(conversation) >= limits.max_items:
            raise ProtocolError(
                f"The conversation already holds {len(conversation)} items, the most a session "
                "may hold. Delete old items (conversation.item.delete) before adding more.",
                code="conversation_too_large",
                param="item",
            )
        total = self.total(conversation)
        if total + size > limits.max_bytes:
            raise ProtocolError(
                f"Adding this {size}-byte item would take the conversation to {total + size} "
                f"bytes; a session may hold at most {limits.max_bytes}. Delete old items "
                "(conversation.item.delete) before adding more.",
                code="conversation_too_large",
                param="item",
            )

    def trim_audio(self, conversation: Conversation) -> list[str]:
        """Drop the stored audio of the oldest items until the conversation fits again (the
        newest item keeps its audio). Returns the ids whose audio was dropped."""
        total = self.total(conversation)
        dropped: list[str] = []
        ids = [item.id for item in conversation]
        for item_id in ids[:-1]:
            if total <= self.limits.max_bytes:
                break
            audio = conversation.audio.pop(item_id, None) if item_id is not None else None
            if audio is not None and item_id is not None:
                total -= len(audio)
                dropped.append(item_id)
        return dropped

    def check_response_slot(self, running: int) -> None:
        if running >= self.limits.max_responses:
            raise ProtocolError(
                f"{running} responses are already in progress in this session, the most it "
                "may run at once (out-of-band ones included). Wait for one to finish "
                "(response.done) or cancel one.",
                code="too_many_responses",
            )
