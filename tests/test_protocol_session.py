"""session.created and the rules of session.update (PROTOCOL.md §6.5, §18 items 1 and 8)."""

from __future__ import annotations

from typing import Any

import pytest

from _helpers_protocol import events, send, started, the_error, types, update
from voxgate.protocol.connection import RealtimeConnection


def session_of(outputs: list[Any]) -> dict[str, Any]:
    out = events(outputs)
    assert types(out) == ["session.updated"], out
    session: dict[str, Any] = out[0]["session"]
    return session


def test_session_created_is_the_first_event_and_names_the_session_type() -> None:
    conn = RealtimeConnection(model="gpt-realtime-mini")
    out = events(conn.start())
    assert types(out) == ["session.created"]
    session = out[0]["session"]
    assert session["type"] == "realtime"
    assert session["object"] == "realtime.session"
    assert session["id"].startswith("sess_")
    assert session["model"] == "gpt-realtime-mini"
    assert session["instructions"]  # a non-empty default persona


def test_update_merges_nested_objects_field_by_field() -> None:
    conn = started()
    update(conn, audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}})
    session = session_of(update(conn, audio={"output": {"voice": "coral"}}))
    assert session["audio"]["output"]["voice"] == "coral"
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.8
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}

    session = session_of(
        update(
            conn,
            audio={"input": {"turn_detection": {"type": "server_vad", "prefix_padding_ms": 100}}},
        )
    )
    detection = session["audio"]["input"]["turn_detection"]
    assert (detection["threshold"], detection["prefix_padding_ms"]) == (0.8, 100)


def test_noise_reduction_keeps_its_strength_when_an_update_omits_it() -> None:
    conn = started()
    update(conn, audio={"input": {"noise_reduction": {"type": "near_field", "strength": 0.4}}})
    session = session_of(update(conn, audio={"input": {"noise_reduction": {"type": "far_field"}}}))
    assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.4}


@pytest.mark.parametrize(
    ("patch", "path", "cleared"),
    [
        ({"instructions": ""}, ("instructions",), ""),
        ({"tools": []}, ("tools",), []),
        (
            {"audio": {"input": {"turn_detection": None}}},
            ("audio", "input", "turn_detection"),
            None,
        ),
        ({"audio": {"input": {"transcription": None}}}, ("audio", "input", "transcription"), None),
        (
            {"audio": {"input": {"noise_reduction": None}}},
            ("audio", "input", "noise_reduction"),
            None,
        ),
    ],
)
def test_update_clears_a_field(patch: dict[str, Any], path: tuple[str, ...], cleared: Any) -> None:
    conn = started()
    update(
        conn,
        tools=[{"type": "function", "name": "lookup"}],
        audio={
            "input": {
                "transcription": {"model": "whisper-1"},
                "noise_reduction": {"type": "near_field"},
            }
        },
    )
    session = session_of(update(conn, **patch))
    value: Any = session
    for key in path:
        value = value[key]
    assert value == cleared


def test_switching_turn_detection_type_starts_from_that_types_defaults() -> None:
    conn = started()
    update(conn, audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.9}}})
    session = session_of(
        update(conn, audio={"input": {"turn_detection": {"type": "semantic_vad"}}})
    )
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    }
    session = session_of(update(conn, audio={"input": {"turn_detection": {"type": "server_vad"}}}))
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.5


def test_unchanged_model_voice_and_tracing_are_accepted() -> None:
    conn = started(model="gpt-realtime")
    update(conn, tracing="auto", audio={"output": {"voice": "ash"}})
    conn.audio_produced = True  # the voice is locked from here on
    session = session_of(
        update(conn, model="gpt-realtime", tracing="auto", audio={"output": {"voice": "ash"}})
    )
    assert (session["model"], session["tracing"]) == ("gpt-realtime", "auto")


def test_model_may_be_set_until_the_first_response() -> None:
    conn = started(model="gpt-realtime")
    assert session_of(update(conn, model="gpt-realtime-mini"))["model"] == "gpt-realtime-mini"


def test_model_cannot_change_once_a_response_has_started() -> None:
    conn = started(model="gpt-realtime")
    assert events(send(conn, "response.create"))[0]["type"] == "response.created"
    error = the_error(update(conn, event_id="u1", model="gpt-realtime-mini"))
    assert (error["param"], error["event_id"]) == ("session.model", "u1")
    assert conn.config.model == "gpt-realtime"
    assert session_of(update(conn, model="gpt-realtime"))["model"] == "gpt-realtime"


def test_voice_change_after_assistant_audio_is_refused() -> None:
    conn = started()
    assert (
        session_of(update(conn, audio={"output": {"voice": "sage"}}))["audio"]["output"]["voice"]
        == "sage"
    )
    conn.audio_produced = True
    error = the_error(update(conn, event_id="u2", audio={"output": {"voice": "verse"}}))
    assert error["code"] == "cannot_update_voice"
    assert error["event_id"] == "u2"
    assert conn.config.audio.output.voice == "sage"


def test_tracing_cannot_change_once_enabled() -> None:
    conn = started()
    update(conn, tracing="auto")
    error = the_error(update(conn, tracing={"workflow_name": "other"}))
    assert error["param"] == "session.tracing"


def test_an_invalid_update_is_rejected_whole_and_changes_nothing() -> None:
    conn = started()
    before = conn.config
    error = the_error(
        update(conn, event_id="u3", instructions="Be terse.", audio={"output": {"speed": 9}})
    )
    assert (error["code"], error["param"]) == ("invalid_value", "session.audio.output.speed")
    assert conn.config == before
    assert conn.config.instructions != "Be terse."


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"voice": "alloy"}, "session.voice"),
        ({"modalities": ["text"]}, "session.modalities"),
        (
            {"audio": {"input": {"transcription": {"enabled": True}}}},
            "session.audio.input.transcription.enabled",
        ),
        (
            {"audio": {"output": {"format": {"type": "audio/pcm", "bits": 16}}}},
            "session.audio.output.format.bits",
        ),
    ],
)
def test_unknown_field_is_reported_with_its_dotted_path(patch: dict[str, Any], param: str) -> None:
    conn = started()
    before = conn.config
    error = the_error(update(conn, event_id="u4", instructions="x", **patch))
    assert error["code"] == "unknown_parameter"
    assert error["param"] == param
    assert param in error["message"]
    assert conn.config == before


def test_update_without_session_type_is_missing_a_required_parameter() -> None:
    conn = started()
    error = the_error(send(conn, "session.update", session={"instructions": "x"}, event_id="u5"))
    assert (error["code"], error["param"], error["event_id"]) == (
        "missing_required_parameter",
        "session.type",
        "u5",
    )


def test_session_updated_carries_the_full_session_and_a_fresh_event_id() -> None:
    conn = started()
    out = events(update(conn, event_id="client_1", instructions="Hi"))
    assert out[0]["event_id"] != "client_1"
    session = out[0]["session"]
    assert {"type", "model", "output_modalities", "audio", "tools", "tool_choice"} <= set(session)
