"""The scripted language model of the server-tools tests: it decides from what it is sent,
like a real model — a user asking for something calls the tool, a tool result is spoken."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _realtime import Events
from conftest import ChatChunk, speech_pcm24k


def say(text: str, pieces: int = 1) -> list[ChatChunk]:
    words = text.split(" ")
    step = max(1, len(words) // pieces)
    chunks: list[ChatChunk] = [
        ({"content": " ".join(words[i : i + step]) + " "}, None) for i in range(0, len(words), step)
    ]
    return [*chunks, ({}, "stop")]


def call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> list[ChatChunk]:
    raw = json.dumps(arguments)
    head = {"index": 0, "id": call_id, "type": "function", "function": {"name": name}}
    return [
        (
            {
                "role": "assistant",
                "tool_calls": [{**head, "function": {"name": name, "arguments": ""}}],
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": raw[:5]}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": raw[5:]}}]}, None),
        ({}, "tool_calls"),
    ]


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content)
    return str(content)


class Model:
    """``asks`` maps a word of the user's request to the call the model makes for it;
    ``readback_pieces`` streams the confirmation question slowly (for barge-in);
    ``claims_confirmed``: on "confirmation required" the model says the user confirmed and
    calls the tool again instead of asking."""

    def __init__(self, asks: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.asks = asks
        self.readback_pieces = 1
        self.claims_confirmed = False

    def __call__(self, body: dict[str, Any]) -> list[ChatChunk]:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return self._result(json.loads(last["content"]), body)
        if last["role"] == "system":  # voxgate's note: an action was not approved
            return say("Okay, I did not do it.")
        words = text_of(last).lower()
        for word, (name, arguments) in self.asks.items():
            if word in words:
                return call(name, arguments)
        return say("How can I help?")

    def _result(self, out: dict[str, Any], body: dict[str, Any]) -> list[ChatChunk]:
        if out.get("status") == "confirmation_required":
            if self.claims_confirmed:
                prior = [m for m in body["messages"] if m["role"] == "tool"]
                if len(prior) < 2:
                    name = body["messages"][-2]["tool_calls"][0]["function"]["name"]
                    args = json.loads(
                        body["messages"][-2]["tool_calls"][0]["function"]["arguments"]
                    )
                    chunks = call(name, args, "call_2")
                    return [
                        ({"content": "The user confirmed, so I am doing it now. "}, None),
                        *chunks,
                    ]
            return say(
                f"Please confirm: {out['summary']}. Shall I go ahead and do that for you now?",
                self.readback_pieces,
            )
        if "forecast" in out:
            return say(f"The forecast is {out['forecast']}.")
        if "deleted" in out:
            return say(f"Done, account {out['deleted']} is deleted.")
        if "error" in out:
            return say(f"Sorry: {out['error']['message']}")
        return say(f"Result: {json.dumps(out)}")


# -- reading what a client saw ---------------------------------------------------------------


async def tell(conn: Any, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
    await conn.response.create()


async def answer_approval(conn: Any, request_id: str, *, approve: bool) -> None:
    """Send the client's `mcp_approval_response` to the approval request `request_id`."""
    item = {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
    await conn.conversation.item.create(item=item)  # type: ignore[arg-type]


def spoke(event: Any) -> bool:
    """A response.done whose output holds an assistant message (the model said something)."""
    return event.type == "response.done" and any(
        o.type == "message" for o in event.response.output or []
    )


async def answer(events: Events, wait_s: float = 30) -> tuple[list[Any], str]:
    """Events up to the next response that speaks, and what it said."""
    seen = await events.until(spoke, wait_s)
    message = next(o for o in seen[-1].response.output if o.type == "message")
    return seen, " ".join(part.transcript or part.text or "" for part in message.content)


def added(seen: list[Any], kind: str) -> list[Any]:
    return [e.item for e in seen if e.type == "conversation.item.added" and e.item.type == kind]


# -- a live microphone -----------------------------------------------------------------------

CHUNK_MS = 20
CHUNK_BYTES = 24 * 2 * CHUNK_MS


class Microphone:
    """Streams audio in real time, silence whenever nothing is queued, like a live mic."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.queue = bytearray()

    def say(self, text: str) -> None:
        self.queue += speech_pcm24k(text)

    async def run(self) -> None:
        start, sent = time.monotonic(), 0
        while True:
            chunk = bytes(self.queue[:CHUNK_BYTES]) or bytes(CHUNK_BYTES)
            del self.queue[:CHUNK_BYTES]
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - time.monotonic()))


@asynccontextmanager
async def listening(conn: Any) -> AsyncIterator[Microphone]:
    mic = Microphone(conn)
    task = asyncio.create_task(mic.run())
    try:
        yield mic
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
