"""Helpers for the protocol and session tests: drive a `RealtimeConnection` with plain calls,
hold every server event against the `openai` SDK's own server-event union, and a few tiny
engine fakes that stall on purpose (so a test decides when a response moves on)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from voxgate.engines.base import ChatRequest, LLMDone, LLMEvent, TextDelta
from voxgate.protocol import events as ev
from voxgate.protocol.commands import (
    Command,
    ResponseFinished,
    ResponsePlan,
    StartResponse,
    UserInput,
)
from voxgate.protocol.connection import Output, RealtimeConnection

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
ERROR_KEYS = {"type", "code", "message", "param", "event_id"}


# ---------------------------------------------------------------------------------------------
# Server events: validated, then as plain dicts
# ---------------------------------------------------------------------------------------------


def validated(text: str | bytes) -> dict[str, Any]:
    """One server event's JSON, checked against the SDK union; returned as a dict."""
    SERVER_EVENT.validate_json(text)
    event: dict[str, Any] = json.loads(text)
    assert isinstance(event.get("event_id"), str) and event["event_id"].startswith("event_")
    if event["type"] == "error":
        assert set(event["error"]) == ERROR_KEYS, event["error"]
    return event


def events(outputs: Iterable[Output]) -> list[dict[str, Any]]:
    """The server events among ``outputs``, each validated, in order."""
    return [validated(o.to_json()) for o in outputs if isinstance(o, ev.ServerEvent)]


def commands(outputs: Iterable[Output]) -> list[Command]:
    return [o for o in outputs if not isinstance(o, ev.ServerEvent)]


def effects(outputs: Iterable[Output]) -> list[Command]:
    """The commands that make the runtime act: records for observers left out."""
    return [c for c in commands(outputs) if not isinstance(c, (ResponseFinished, UserInput))]


def types(evs: Iterable[dict[str, Any]], *, audio: bool = True) -> list[str]:
    """Event types in order; audio deltas left out when ``audio`` is False."""
    return [e["type"] for e in evs if audio or e["type"] != "response.output_audio.delta"]


def the_error(outputs: Iterable[Output]) -> dict[str, Any]:
    """The ``error`` object of the single error event ``outputs`` must consist of."""
    out = events(outputs)
    assert types(out) == ["error"], types(out)
    assert not commands(outputs)
    error: dict[str, Any] = out[0]["error"]
    return error


# ---------------------------------------------------------------------------------------------
# Driving a connection
# ---------------------------------------------------------------------------------------------


def started(**kwargs: Any) -> RealtimeConnection:
    """A connection whose ``session.created`` has been sent."""
    conn = RealtimeConnection(**kwargs)
    conn.start()
    return conn


def send(conn: RealtimeConnection, type: str, **fields: Any) -> list[Output]:
    """Feed one client event (as a JSON text frame)."""
    return conn.receive(json.dumps({"type": type, **fields}))


def update(conn: RealtimeConnection, event_id: str | None = None, **session: Any) -> list[Output]:
    extra = {"event_id": event_id} if event_id else {}
    return send(conn, "session.update", session={"type": "realtime", **session}, **extra)


def user_text(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return item


def add_user_text(conn: RealtimeConnection, text: str, item_id: str) -> None:
    out = send(conn, "conversation.item.create", item=user_text(text, item_id))
    assert types(events(out)) == ["conversation.item.added", "conversation.item.done"]


def item_ids(conn: RealtimeConnection) -> list[str | None]:
    return [item.id for item in conn.conversation]


def plan_of(outputs: Iterable[Output]) -> ResponsePlan:
    starts = [o for o in outputs if isinstance(o, StartResponse)]
    assert len(starts) == 1, outputs
    return starts[0].plan


def start_response(conn: RealtimeConnection, **response: Any) -> ResponsePlan:
    """``response.create`` that must succeed; returns the plan the engine would get."""
    out = send(conn, "response.create", response=response)
    assert types(events(out)) == ["response.created"]
    return plan_of(out)


def pcm_b64(ms: float) -> str:
    """``ms`` of 24 kHz PCM16 silence (48 bytes per ms), base64: the default input format."""
    return base64.b64encode(bytes(round(ms * 48))).decode()


# ---------------------------------------------------------------------------------------------
# Engine fakes that stall until the test lets them go
# ---------------------------------------------------------------------------------------------


class StallingLLM:
    """Says ``first`` and then waits for ``release`` before finishing with ``rest``.

    ``closed`` is set when the consumer closes the stream early (cancellation); ``requests``
    records what was asked."""

    name = "stalling-llm"

    def __init__(self, first: str = "Hello", rest: str = " there.") -> None:
        self.first, self.rest = first, rest
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.requests: list[ChatRequest] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        self.requests.append(request)
        try:
            yield TextDelta(self.first)
            await self.release.wait()
            yield TextDelta(self.rest)
            yield LLMDone()
        except (GeneratorExit, asyncio.CancelledError):
            self.closed.set()
            raise

    async def aclose(self) -> None:
        pass


class StallingTTS:
    """Speaks one 20 ms chunk of a 24 kHz tone per text, then waits for ``release``.

    ``closed`` is set when the synthesis is closed early (cancellation)."""

    name = "stalling-tts"
    sample_rate = 24000

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed = asyncio.Event()
        self.texts: list[str] = []

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncIterator[bytes]:
        self.texts.append(text)
        try:
            yield b"\x10\x00" * 480
            await self.release.wait()
            yield b"\x10\x00" * 480
        except (GeneratorExit, asyncio.CancelledError):
            self.closed.set()
            raise

    async def aclose(self) -> None:
        pass


async def eventually(condition: Callable[[], bool], *, turns: int = 10_000) -> None:
    """Let the loop run (no real time passes) until ``condition`` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition still false after {turns} loop turns")


async def settle(turns: int = 200) -> None:
    """Let every ready task run for a while (no real time passes): before asserting that
    something did *not* happen."""
    for _ in range(turns):
        await asyncio.sleep(0)
