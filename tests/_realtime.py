"""Helpers for driving voxgate with the official `openai` SDK realtime client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

from openai.resources.realtime.realtime import AsyncRealtimeConnection

from conftest import validated


class Events:
    """Reads server events from an SDK connection, validating each against the SDK's union
    as raw JSON, event by event, and keeps them all for assertions."""

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self.conn = conn
        self.all: list[Any] = []

    async def next(self, wait_s: float = 20.0) -> Any:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), wait_s)
        event = validated(raw)
        self.all.append(event)
        return event

    async def until(self, kind: str | Callable[[Any], bool], wait_s: float = 30.0) -> list[Any]:
        """Events up to and including the first that matches ``kind``."""
        match = (lambda e: e.type == kind) if isinstance(kind, str) else kind
        seen: list[Any] = []
        async with asyncio.timeout(wait_s):
            while True:
                event = await self.next(wait_s)
                seen.append(event)
                if match(event):
                    return seen

    async def expect(self, kind: str) -> Any:
        event = await self.next()
        assert event.type == kind, f"expected {kind}, got {event.type}: {event}"
        return event


def types(events: list[Any], *, audio: bool = False) -> list[str]:
    """Event types in order; audio deltas left out unless asked for (their count varies)."""
    return [e.type for e in events if audio or e.type != "response.output_audio.delta"]


def audio_bytes(events: list[Any]) -> bytes:
    return b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )


def rms(pcm: bytes) -> float:
    import numpy as np

    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def user_text(text: str) -> dict[str, Any]:
    """A user message item carrying ``text``, as a client creates it."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def add_user_text(conn: AsyncRealtimeConnection, events: Events, text: str) -> Any:
    """Create a user text item and return it once the server says it is done."""
    await conn.conversation.item.create(item=user_text(text))
    return (await events.until("conversation.item.done"))[-1].item
