"""The shape of every error (PROTOCOL.md §11.11, §12): type, code, message, param, event_id
(the client's), a fresh server event id — and the connection goes on unchanged."""

from __future__ import annotations

import json

import pytest

from _helpers_protocol import ERROR_KEYS, events, send, started, the_error, types


def test_unknown_event_type() -> None:
    conn = started()
    error = the_error(conn.receive(json.dumps({"type": "scooby.doo", "event_id": "my_evt"})))
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        "invalid_value",
        "type",
        "my_evt",
    )
    assert "scooby.doo" in error["message"]


def test_event_without_type() -> None:
    conn = started()
    error = the_error(conn.receive(json.dumps({"event_id": "e1"})))
    assert (error["code"], error["event_id"]) == ("invalid_event", "e1")
    assert error["message"] == "The 'type' field is missing."


@pytest.mark.parametrize("frame", ["{not json", "[1, 2]", b"\x00\x01"])
def test_frames_that_are_not_a_json_object(frame: str | bytes) -> None:
    conn = started()
    error = the_error(conn.receive(frame))
    assert error["type"] == "invalid_request_error"
    assert error["event_id"] is None


def test_missing_required_field_names_it() -> None:
    conn = started()
    error = the_error(send(conn, "conversation.item.retrieve", event_id="e2"))
    assert (error["code"], error["param"], error["event_id"]) == (
        "missing_required_parameter",
        "item_id",
        "e2",
    )


def test_unknown_field_on_an_event() -> None:
    conn = started()
    error = the_error(send(conn, "input_audio_buffer.clear", bogus=1, event_id="e3"))
    assert (error["code"], error["param"]) == ("unknown_parameter", "bogus")


def test_missing_content_text_on_a_message_item() -> None:
    conn = started()
    item = {"type": "message", "role": "user", "content": [{"type": "input_text"}]}
    error = the_error(send(conn, "conversation.item.create", item=item))
    assert (error["code"], error["param"]) == ("missing_required_parameter", "item.content[0].text")


def test_output_audio_buffer_clear_over_websocket_is_an_error() -> None:
    conn = started()
    error = the_error(send(conn, "output_audio_buffer.clear", event_id="e4"))
    assert error["event_id"] == "e4"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "scooby.doo"},
        {"type": "session.update", "session": {"type": "realtime", "nope": 1}},
        {"type": "input_audio_buffer.commit"},
        {"type": "conversation.item.delete", "item_id": "item_x"},
        {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": 0,
        },
        {"type": "response.cancel"},
        {"type": "response.create", "response": {"modalities": ["text"]}},
    ],
)
def test_every_error_has_the_full_shape_and_changes_nothing(event: dict[str, object]) -> None:
    conn = started()
    before = (conn.config, list(conn.conversation), dict(conn.responses))
    out = events(conn.receive(json.dumps({**event, "event_id": "client_1"})))
    assert types(out) == ["error"]
    assert set(out[0]["error"]) == ERROR_KEYS
    assert out[0]["error"]["event_id"] == "client_1"
    assert out[0]["event_id"] != "client_1"
    assert isinstance(out[0]["error"]["message"], str) and out[0]["error"]["message"]
    assert (conn.config, list(conn.conversation), dict(conn.responses)) == before
    # The connection keeps working.
    assert types(events(send(conn, "input_audio_buffer.clear"))) == ["input_audio_buffer.cleared"]
