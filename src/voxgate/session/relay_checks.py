"""What a relay checks on its own: the client events it forwards (`check`, as the embedded
pipeline would refuse them) and how an upstream's refusal is described (`described`)."""

from __future__ import annotations

from typing import Any

from ..protocol import events as ev
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.input_buffer import check_append_size
from ..protocol.response_params import parse_response_params


def check(conn: RealtimeConnection, event: ev.ClientEvent, size: int) -> None:
    """What the pipeline would refuse (beyond the shape): the policy, the client secret's
    binding, Live API models (all in the connection's guard), appends and items over the
    pipeline's size limits (an item's audio counted as base64). ``session.update`` also moves
    the mirror configuration."""
    match event:
        case ev.InputAudioBufferAppend(audio=audio):
            check_append_size(audio)
        case ev.ConversationItemCreate() if (
            size > (most := conn.budget.limits.max_item_bytes) * 4 // 3
        ):
            raise ProtocolError(
                f"The item is {size} bytes of JSON; an item may have at most {most} bytes (text "
                f"and audio together: {most * 4 // 3} as JSON with base64 audio). Split it into "
                "several items.",
                code="item_too_large",
                param="item",
            )
        case ev.SessionUpdate(session=patch):
            conn.configure(patch)
        case ev.ResponseCreate(response=raw):
            params = parse_response_params(raw)
            if conn.guard is not None:
                conn.guard.check_response(conn.config, params)
        case _:
            pass


def described(data: dict[str, Any]) -> str:
    """An upstream's event named by its type and error code only: the message of an error
    about voxgate's own credential may quote part of the key."""
    if data.get("type") == "error" and isinstance(data.get("error"), dict):
        error = data["error"]
        param = f" on {error['param']}" if isinstance(error.get("param"), str) else ""
        return f"error {error.get('code') or error.get('type')}{param}"
    return f"a {data.get('type')!r} event"
