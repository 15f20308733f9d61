"""User audio that arrives inside items (``conversation.item.create``, or ``response.create``
``input``) rather than through the input buffer.

The language model hears users through transcripts, so such audio is transcribed like a
committed turn: its bytes leave the item (audio never lives inside an item, see `items.py`)
and a ``TranscribeItem`` asks for its words. Audio parts that already carry a transcript are
taken at their word: replayed history is not transcribed again.
"""

from __future__ import annotations

import base64
import binascii

from .errors import ProtocolError
from .items import InputAudio, Item, UserMessage


def take_audio(item: Item, param: str) -> bytes:
    """Decode and remove the audio of a user message's ``input_audio`` parts (joined in
    order); empty for any other item."""
    if not isinstance(item, UserMessage):
        return b""
    audio = b""
    for i, part in enumerate(item.content):
        if isinstance(part, InputAudio) and part.audio:
            try:
                audio += base64.b64decode(part.audio, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError(
                    "Invalid base64 audio.", param=f"{param}.content[{i}].audio"
                ) from None
            part.audio = None
    return audio


def needs_transcript(item: Item) -> bool:
    """Whether a user message holds audio whose words nobody has supplied."""
    return isinstance(item, UserMessage) and any(
        isinstance(p, InputAudio) and p.transcript is None for p in item.content
    )


def _holds_audio(item: Item) -> bool:
    return isinstance(item, UserMessage) and any(
        isinstance(p, InputAudio) and p.audio for p in item.content
    )


def take_inline_audio(context: list[Item]) -> list[tuple[UserMessage, bytes]]:
    """The audio of ``response.create`` ``input`` items (the only items that still hold
    bytes): decoded all before anything is kept, so a bad part changes nothing; returns the
    items that need transcribing, with their audio."""
    taken = [
        (item, take_audio(item, f"response.input[{i}]"))
        for i, item in enumerate(context)
        if _holds_audio(item)
    ]
    return [
        (item, audio)
        for item, audio in taken
        if isinstance(item, UserMessage) and item.id and needs_transcript(item)
    ]
