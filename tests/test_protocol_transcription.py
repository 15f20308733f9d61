"""The rules of transcription sessions, on the sans-IO connection: the session object, what
may be configured, the events it refuses, and that turns never create responses."""

from __future__ import annotations

import json

import pytest

from _helpers_protocol import commands, events, send, started, the_error, types
from voxgate.protocol.commands import StartResponse, TranscribeItem
from voxgate.protocol.connection import RealtimeConnection


def transcription_session() -> RealtimeConnection:
    conn = RealtimeConnection(intent="transcription")
    [created] = events(conn.start())
    assert created["session"]["type"] == "transcription"
    assert created["session"]["object"] == "realtime.transcription_session"
    assert set(created["session"]) == {"object", "id", "expires_at", "type", "audio", "include"}
    assert set(created["session"]["audio"]) == {"input"}
    return conn


def test_defaults_transcribe_with_server_vad() -> None:
    conn = transcription_session()
    assert conn.config.audio.input.transcription is not None
    assert conn.config.audio.input.turn_detection is not None


def test_update_merges_and_echoes_the_transcription_shape() -> None:
    conn = transcription_session()
    out = send(
        conn,
        "session.update",
        session={
            "type": "transcription",
            "audio": {"input": {"transcription": {"language": "de", "prompt": "Namen"}}},
        },
    )
    [updated] = events(out)
    transcription = updated["session"]["audio"]["input"]["transcription"]
    assert transcription["language"] == "de" and transcription["model"] == "whisper-1"
    # What turn detection and the recogniser read is the transcription session's own input.
    assert conn.config.audio.input.transcription is not None
    assert conn.config.audio.input.transcription.prompt == "Namen"


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"instructions": "x"}, "session.instructions"),
        ({"tools": []}, "session.tools"),
        ({"audio": {"output": {"voice": "alloy"}}}, "session.audio.output"),
        ({"model": "gpt-realtime"}, "session.model"),
        (
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}
                }
            },
            "session.audio.input.turn_detection.idle_timeout_ms",
        ),
        ({"audio": {"input": {"transcription": None}}}, "session.audio.input.transcription"),
    ],
)
def test_realtime_settings_are_refused(patch: dict[str, object], param: str) -> None:
    conn = transcription_session()
    error = the_error(send(conn, "session.update", session={"type": "transcription", **patch}))
    assert error["param"] == param, error


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.create"},
        {"type": "response.cancel"},
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": []},
        },
        {"type": "output_audio_buffer.clear"},
    ],
)
def test_response_and_editing_events_are_refused(event: dict[str, object]) -> None:
    conn = transcription_session()
    error = the_error(conn.receive(json.dumps({**event, "event_id": "e1"})))
    assert (error["code"], error["event_id"]) == ("unsupported_event", "e1")
    assert "transcription session" in error["message"]


def test_a_detected_turn_is_transcribed_and_never_answered() -> None:
    conn = transcription_session()
    send(conn, "input_audio_buffer.append", audio="AAAA" * 2000)
    out = conn.speech_stopped("item_1", 0, 100)
    assert types(events(out)) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert [type(c) for c in commands(out)] == [TranscribeItem]
    assert not any(isinstance(c, StartResponse) for c in commands(out))
    assert types(events(conn.transcription_done("item_1", "hello", 1.0))) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]


def test_type_switches_only_while_the_conversation_is_empty() -> None:
    conn = started()
    out = send(conn, "session.update", session={"type": "transcription"})
    assert events(out)[0]["session"]["type"] == "transcription"
    out = send(conn, "session.update", session={"type": "realtime"})
    assert events(out)[0]["session"]["type"] == "realtime"
    send(conn, "input_audio_buffer.append", audio="AAAA" * 2000)
    send(conn, "input_audio_buffer.commit")
    error = the_error(send(conn, "session.update", session={"type": "transcription"}))
    assert error["param"] == "session.type"
