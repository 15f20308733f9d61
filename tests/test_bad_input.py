"""Bad input over a real WebSocket: each mistake gets one clear `error` event (type, code,
message, param, the client's event_id) and the session keeps working."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websockets

from conftest import RunningServer, validated

pytestmark = pytest.mark.usefixtures("voxgate_server")


class RawClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, payload: str | dict[str, Any]) -> None:
        await self.ws.send(payload if isinstance(payload, str) else json.dumps(payload))

    async def recv(self) -> Any:
        return validated(await self.ws.recv())

    async def error_for(self, payload: str | dict[str, Any]) -> Any:
        await self.send(payload)
        event = await self.recv()
        assert event.type == "error", event
        assert event.error.type == "invalid_request_error"
        assert event.error.message
        return event.error

    async def still_works(self) -> None:
        """The session answers a valid event after the error."""
        await self.send({"type": "input_audio_buffer.clear", "event_id": "evt_ok"})
        assert (await self.recv()).type == "input_audio_buffer.cleared"


async def connect(server: RunningServer) -> Any:
    return websockets.connect(
        server.ws_url + "?model=gpt-realtime",
        additional_headers={"Authorization": "Bearer sk-test"},
        max_size=None,
    )


@pytest.fixture
async def raw(voxgate_server: RunningServer) -> Any:
    async with await connect(voxgate_server) as ws:
        client = RawClient(ws)
        assert (await client.recv()).type == "session.created"
        yield client


async def test_invalid_json(raw: RawClient) -> None:
    error = await raw.error_for("{not json")
    assert error.code == "invalid_json"
    assert "JSON" in error.message
    await raw.still_works()


async def test_unknown_event_type(raw: RawClient) -> None:
    error = await raw.error_for({"type": "scooby.doo", "event_id": "evt_1"})
    assert (error.code, error.param, error.event_id) == ("invalid_value", "type", "evt_1")
    assert "scooby.doo" in error.message
    await raw.still_works()


async def test_missing_type(raw: RawClient) -> None:
    error = await raw.error_for({"event_id": "evt_2"})
    assert (error.code, error.event_id) == ("invalid_event", "evt_2")
    await raw.still_works()


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"type": "conversation.item.retrieve"}, "missing_required_parameter", "item_id"),
        (
            {
                "type": "conversation.item.truncate",
                "item_id": "x",
                "content_index": "zero",
                "audio_end_ms": 5,
            },
            "invalid_value",
            "content_index",
        ),
        (
            {"type": "session.update", "session": {"instructions": "x"}},
            "missing_required_parameter",
            "session.type",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "voice": "ash"}},
            "unknown_parameter",
            "session.voice",
        ),
        (
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"output": {"speed": 7}}},
            },
            "invalid_value",
            "session.audio.output.speed",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text"}]},
            },
            "missing_required_parameter",
            "item.content[0].text",
        ),
        (
            {"type": "input_audio_buffer.append", "audio": "***not base64***"},
            "invalid_value",
            "audio",
        ),
        (
            {"type": "response.create", "response": {"output_modalities": ["video"]}},
            "invalid_value",
            "response.output_modalities[0]",
        ),
    ],
)
async def test_missing_or_mistyped_fields(
    raw: RawClient, event: dict[str, Any], code: str, param: str
) -> None:
    error = await raw.error_for({**event, "event_id": "evt_bad"})
    assert (error.code, error.param, error.event_id) == (code, param, "evt_bad")
    await raw.still_works()


async def test_oversized_append(raw: RawClient) -> None:
    audio = base64.b64encode(bytes(16 * 1024 * 1024)).decode()
    error = await raw.error_for(
        {"type": "input_audio_buffer.append", "audio": audio, "event_id": "evt_big"}
    )
    assert (error.code, error.event_id) == ("input_audio_buffer_append_too_large", "evt_big")
    assert "15 MiB" in error.message
    await raw.still_works()


@pytest.mark.parametrize(
    "event",
    [
        {"type": "conversation.item.retrieve", "item_id": "item_nope"},
        {"type": "conversation.item.delete", "item_id": "item_nope"},
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 0,
        },
        {
            "type": "conversation.item.create",
            "previous_item_id": "item_nope",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        },
    ],
)
async def test_unknown_item_ids(raw: RawClient, event: dict[str, Any]) -> None:
    error = await raw.error_for({**event, "event_id": "evt_unknown"})
    assert (error.code, error.event_id) == ("item_not_found", "evt_unknown")
    assert "item_nope" in error.message
    await raw.still_works()


async def test_voice_change_after_audio(raw: RawClient) -> None:
    await raw.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    await raw.send({"type": "response.create"})
    while (await raw.recv()).type != "response.done":
        pass
    same = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"output": {"voice": "alloy"}}},
    }
    await raw.send(same)  # unchanged voice: accepted
    assert (await raw.recv()).type == "session.updated"
    error = await raw.error_for(
        {
            "type": "session.update",
            "event_id": "evt_voice",
            "session": {"type": "realtime", "audio": {"output": {"voice": "echo"}}},
        }
    )
    assert (error.code, error.event_id) == ("cannot_update_voice", "evt_voice")
    await raw.still_works()


async def test_cancel_without_active_response(raw: RawClient) -> None:
    error = await raw.error_for({"type": "response.cancel", "event_id": "evt_c"})
    assert (error.code, error.event_id) == ("response_cancel_not_active", "evt_c")
    assert "no active response" in error.message
    await raw.still_works()


async def test_second_response_create_while_one_runs(
    start_server: Any, slow_chat_server: Any
) -> None:
    server = start_server(llm_base_url=slow_chat_server.url, llm_model="slow-model")
    async with await connect(server) as ws:
        raw = RawClient(ws)
        await raw.recv()
        await raw.send({"type": "response.create", "event_id": "evt_first"})
        first = await raw.recv()
        assert first.type == "response.created"
        await raw.send({"type": "response.create", "event_id": "evt_second"})
        while (event := await raw.recv()).type != "error":
            assert event.type != "response.created"
        assert event.error.code == "conversation_already_has_active_response"
        assert event.error.event_id == "evt_second"
        assert first.response.id in event.error.message
        await raw.send({"type": "response.cancel"})
        while (event := await raw.recv()).type != "response.done":
            pass
        assert event.response.id == first.response.id


async def test_binary_frame(raw: RawClient) -> None:
    await raw.ws.send(b"\x00\x01")
    event = await raw.recv()
    assert event.type == "error" and "JSON text" in event.error.message
    await raw.still_works()
