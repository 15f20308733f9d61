"""Single frames that used to end a session: each now gets one `error` event (echoing the
event_id when it can be read) and the session goes on — for the primary client and for a
sideband client, whose bad frame must never end the call it is attached to."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from _helpers_protocol import validated
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.decode import MAX_JSON_DEPTH
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, RunningSession, running_session


def engines() -> EngineSet:
    return EngineSet(llm=ScriptedLLM([text_script("Fine, thanks.")]), tts=ScriptedTTS())


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# (frame, the error's code, its param, the event_id it must echo)
PROBE_FRAMES: list[tuple[str, str, str | None, str | None]] = [
    ('{"type": ["response.cancel"]}', "invalid_value", "type", None),
    ('{"type": {}, "event_id": "e_dict"}', "invalid_value", "type", "e_dict"),
    ('{"type": []}', "invalid_value", "type", None),
    ('{"type": "bogus", "event_id": "\\ud800"}', "invalid_value", "event_id", None),
    (
        '{"type": "conversation.item.create", "event_id": "e_text", "item": {"type": "message",'
        ' "role": "user", "content": [{"type": "input_text", "text": "\\udfff"}]}}',
        "invalid_value",
        "item.content[0].text",
        "e_text",
    ),
    (
        '{"type": "session.update", "event_id": "e_instr",'
        ' "session": {"type": "realtime", "instructions": "\\udfff"}}',
        "invalid_value",
        "session.instructions",
        "e_instr",
    ),
    (
        '{"type": "response.create", "event_id": "e_resp",'
        ' "response": {"instructions": "\\ud800x"}}',
        "invalid_value",
        "response.instructions",
        "e_resp",
    ),
    ("[" * 1000 + "]" * 1000, "invalid_value", None, None),
    (
        '{"type": "session.update", "session": ' + nested(5000) + "}",
        "invalid_value",
        None,
        None,
    ),
    (
        '{"type": "session.update", "event_id": "e_deep", "session": '
        + nested(MAX_JSON_DEPTH + 1)
        + "}",
        "invalid_value",
        "session" + ".a" * (MAX_JSON_DEPTH - 1),
        "e_deep",
    ),
    ('{"type": "conversation.item.retrieve", "item_id": {}}', "invalid_value", "item_id", None),
    (
        '{"type": "response.create", "response": {"input": [1, "x", null]}}',
        "invalid_value",
        "response.input[0]",
        None,
    ),
    ('{"type": "input_audio_buffer.append", "audio": ["AAAA"]}', "invalid_value", "audio", None),
    ('{"type": "response.cancel", "response_id": 5}', "invalid_value", "response_id", None),
    ('{"type": "session.update", "session": []}', "invalid_value", "session", None),
]


async def a_turn_still_works(run: RunningSession, transport: MemoryTransport) -> None:
    transport.send_event({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = (await transport.events_until("response.done"))[-1]
    assert done["response"]["status"] == "completed"


@pytest.mark.parametrize(("frame", "code", "param", "event_id"), PROBE_FRAMES)
async def test_a_hostile_frame_gets_an_error_and_the_session_goes_on(
    frame: str, code: str, param: str | None, event_id: str | None
) -> None:
    async with running_session(engines(), validate=validated) as run:
        assert (await run.transport.next_event())["type"] == "session.created"
        run.transport.send_event(frame)
        [error] = await run.transport.events_until("error")
        assert error["error"]["code"] == code, error
        assert error["error"]["param"] == param, error
        assert error["error"]["event_id"] == event_id
        assert error["error"]["type"] == "invalid_request_error"
        await a_turn_still_works(run, run.transport)
        assert not run.task.done()


async def test_a_huge_bad_value_gets_a_short_message() -> None:
    async with running_session(engines(), validate=validated) as run:
        await run.transport.next_event()
        run.transport.send_event(json.dumps({"type": ["x" * 100_000] * 1000}))
        [error] = await run.transport.events_until("error")
        assert len(error["error"]["message"]) < 1000


async def test_a_bad_frame_on_a_sideband_never_ends_the_session() -> None:
    async with running_session(engines(), validate=validated) as run:
        await run.transport.next_event()
        sideband = MemoryTransport(validate=validated)
        attached = asyncio.create_task(run.session.attach(sideband))
        assert (await sideband.next_event())["type"] == "session.created"
        for frame, *_ in PROBE_FRAMES:
            sideband.send_event(frame)
            error = (await sideband.events_until("error"))[-1]
            assert error["error"]["type"] == "invalid_request_error"
        # The primary client saw the same errors and keeps its session.
        await errors(run.transport, len(PROBE_FRAMES))
        await a_turn_still_works(run, sideband)
        await a_turn_still_works(run, run.transport)
        assert not attached.done() and not run.task.done()
        sideband.close_from_peer()
        await asyncio.wait_for(attached, 5)
        assert not run.task.done()


async def errors(transport: MemoryTransport, count: int) -> list[dict[str, Any]]:
    """The next ``count`` error events (other events in between are passed over)."""
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        seen.append((await transport.events_until("error"))[-1])
    return seen


def test_a_bug_applying_one_event_costs_that_event_not_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = RealtimeConnection()
    conn.start()

    def broken(event: object) -> list[object]:
        raise KeyError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(conn, "_dispatch", broken)
        [error] = conn.receive('{"type": "input_audio_buffer.clear", "event_id": "e_bug"}')
    body = validated(error.to_json())["error"]
    assert body["type"] == "server_error" and body["event_id"] == "e_bug"
    [cleared] = conn.receive('{"type": "input_audio_buffer.clear"}')
    assert cleared.type == "input_audio_buffer.cleared"
