"""Property-based fuzzing of the event decoder and the session (hypothesis).

Over 10,000 generated client frames in all (400 × 25 on the sans-IO connection, 120 × 30
through a running session), these must hold:
- no exception escapes: the connection returns outputs, the session keeps running;
- an event the server refuses gets exactly one `error` event and nothing else, and the error
  is the client's (`invalid_request_error`): never a server bug caught at the last moment;
- a frame whose `type` is certainly wrong is refused;
- after any sequence, a valid turn still works.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fuzz import FRAME, broken_type
from _helpers_protocol import validated
from voxgate.engines import tokens
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol import events as ev
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session

# Token counting loads its encoding on first use (and may wait on the network to find it
# missing): load it now, not inside the first example's hang guard.
tokens.load()

FUZZ: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def errors_of(outputs: list[Any]) -> list[dict[str, Any]]:
    return [validated(o.to_json())["error"] for o in outputs if isinstance(o, ev.Error)]


@settings(max_examples=400, **FUZZ)
@given(st.lists(FRAME | broken_type(), min_size=25, max_size=25))
def test_the_connection_answers_every_frame(frames: list[str | bytes]) -> None:
    conn = RealtimeConnection()
    conn.start()
    for frame in frames:
        outputs = conn.receive(frame)
        errors = errors_of(outputs)
        if errors:
            assert len(outputs) == 1, (frame, outputs)
            assert errors[0]["type"] == "invalid_request_error", (frame, errors)
        for out in outputs:
            if isinstance(out, ev.ServerEvent):
                validated(out.to_json())
        if isinstance(frame, str) and _type_is_broken(frame):
            assert errors, frame


def _type_is_broken(frame: str) -> bool:
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):
        return True
    return not isinstance(data, dict) or not isinstance(data.get("type"), str)


FINAL_TURN = {
    "type": "response.create",
    "event_id": "final",
    "response": {
        "conversation": "none",
        "output_modalities": ["text"],
        "max_output_tokens": "inf",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
        "metadata": {"turn": "final"},
    },
}


@settings(max_examples=200, **FUZZ)
@given(st.lists(FRAME, min_size=30, max_size=30))
def test_a_session_survives_any_frames_and_still_answers(frames: list[str | bytes]) -> None:
    asyncio.run(_session_survives(frames))


async def _session_survives(frames: list[str | bytes]) -> None:
    llm = ScriptedLLM([text_script("Fine, thanks.")] * (len(frames) + 1))
    # A generous hang guard: the machine running the suite may be busy.
    transport = MemoryTransport(validate=validated, timeout_s=30.0)
    engines = EngineSet(llm=llm, tts=ScriptedTTS())
    async with running_session(engines, validate=validated, transport=transport) as run:
        for frame in frames:
            run.transport.send_event(frame)
        run.transport.send_event(FINAL_TURN)

        def final(e: dict[str, Any]) -> bool:
            if e["type"] == "error":
                return bool(e["error"]["event_id"] == "final")
            return e["type"] == "response.done" and e["response"]["metadata"] == {"turn": "final"}

        seen = await run.transport.events_until(final)
        if seen[-1]["type"] == "error":
            # The frames made it a transcription session (session.type "transcription"),
            # which has no responses: its valid turn is input audio, not a reply.
            assert run.connection.transcription is not None, seen[-1]
            assert seen[-1]["error"]["code"] == "unsupported_event"
            run.transport.send_event({"type": "input_audio_buffer.clear"})
            await run.transport.events_until("input_audio_buffer.cleared")
        else:
            assert seen[-1]["response"]["status"] in ("completed", "incomplete")
        assert not run.task.done()
        bugs = [
            e
            for e in seen
            if e["type"] == "error" and e["error"]["type"] != "invalid_request_error"
        ]
        assert not bugs, bugs
