"""The default conversation: an ordered list of items plus the audio that belongs to them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import ProtocolError
from .items import FunctionCall, Item


@dataclass
class Conversation:
    id: str
    _order: list[str] = field(default_factory=list)
    _items: dict[str, Item] = field(default_factory=dict)
    # Raw audio per item id, in the format it was produced or received in.
    audio: dict[str, bytearray] = field(default_factory=dict)
    # The wire format of assistant audio per item id (a response may override the session's).
    audio_format: dict[str, str] = field(default_factory=dict)
    # For assistant audio: (audio bytes produced before it, text) per transcript piece, so a
    # truncation keeps exactly the words whose audio was played.
    marks: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Item]:
        return (self._items[i] for i in self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def previous_of(self, item_id: str) -> str | None:
        index = self._order.index(item_id)
        return self._order[index - 1] if index > 0 else None

    def get(self, item_id: str, param: str = "item_id") -> Item:
        try:
            return self._items[item_id]
        except KeyError:
            raise ProtocolError(
                f"Item with item_id '{item_id}' not found in the conversation.",
                code="item_not_found",
                param=param,
            ) from None

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Add ``item`` after ``previous_item_id`` ("root" = first; None = last).
        Returns the id of the item now before it."""
        assert item.id is not None
        if item.id in self._items:
            raise ProtocolError(
                f"Item with id '{item.id}' already exists in the conversation.",
                code="item_id_conflict",
                param="item.id",
            )
        if previous_item_id is None:
            index = len(self._order)
        elif previous_item_id == "root":
            index = 0
        elif previous_item_id in self._items:
            index = self._order.index(previous_item_id) + 1
        else:
            raise ProtocolError(
                f"Previous item with id '{previous_item_id}' not found in the conversation.",
                code="item_not_found",
                param="previous_item_id",
            )
        self._order.insert(index, item.id)
        self._items[item.id] = item
        return self._order[index - 1] if index > 0 else None

    def delete(self, item_id: str) -> None:
        self.get(item_id)
        self._order.remove(item_id)
        del self._items[item_id]
        self.audio.pop(item_id, None)
        self.audio_format.pop(item_id, None)
        self.marks.pop(item_id, None)

    def call_ids(self) -> set[str]:
        """call_ids of the function calls in the conversation."""
        return {
            i.call_id for i in self._items.values() if isinstance(i, FunctionCall) and i.call_id
        }
