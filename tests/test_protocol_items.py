"""Conversation items: create (and where it lands), retrieve, delete, truncate (PROTOCOL.md
§7, §8, §11.5, §16)."""

from __future__ import annotations

import base64
from typing import Any

from _helpers_protocol import (
    add_user_text,
    events,
    item_ids,
    send,
    start_response,
    started,
    the_error,
    types,
    user_text,
)
from voxgate.protocol.connection import RealtimeConnection

# 24 kHz PCM16: 48 bytes per millisecond.
MS = 48


def test_item_create_appends_and_names_the_item_before_it() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    out = events(send(conn, "conversation.item.create", item=user_text("two", "item_b")))
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert [e["previous_item_id"] for e in out] == ["item_a", "item_a"]
    assert out[0]["item"]["status"] == "completed"
    assert item_ids(conn) == ["item_a", "item_b"]


def test_item_create_without_id_gets_a_server_id() -> None:
    conn = started()
    out = events(send(conn, "conversation.item.create", item=user_text("hi")))
    assert out[0]["item"]["id"].startswith("item_")
    assert out[0]["previous_item_id"] is None


def test_item_create_at_root_inserts_first() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    out = events(
        send(
            conn,
            "conversation.item.create",
            item=user_text("zero", "item_0"),
            previous_item_id="root",
        )
    )
    assert out[0]["previous_item_id"] is None
    assert item_ids(conn) == ["item_0", "item_a"]


def test_item_create_after_an_id_inserts_there() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    add_user_text(conn, "three", "item_c")
    out = events(
        send(
            conn,
            "conversation.item.create",
            item=user_text("two", "item_b"),
            previous_item_id="item_a",
        )
    )
    assert out[0]["previous_item_id"] == "item_a"
    assert item_ids(conn) == ["item_a", "item_b", "item_c"]


def test_item_create_after_an_unknown_id_is_an_error_and_adds_nothing() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    error = the_error(
        send(
            conn,
            "conversation.item.create",
            item=user_text("two", "item_b"),
            previous_item_id="item_nope",
            event_id="c1",
        )
    )
    assert (error["param"], error["event_id"]) == ("previous_item_id", "c1")
    assert "item_nope" in error["message"]
    assert item_ids(conn) == ["item_a"]


def test_function_call_output_for_an_unknown_call_is_an_error() -> None:
    conn = started()
    item = {"type": "function_call_output", "call_id": "call_missing", "output": "42"}
    error = the_error(send(conn, "conversation.item.create", item=item, event_id="c2"))
    assert (error["param"], error["event_id"]) == ("item.call_id", "c2")
    assert "call_missing" in error["message"]
    assert item_ids(conn) == []


def test_function_call_output_for_a_known_call_is_added() -> None:
    conn = started()
    rid = start_response(conn).response_id
    conn.response_call(rid, "item_f", "call_1", "lookup")
    conn.response_call_done(rid, "item_f")
    conn.finish_response(rid)
    item = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    out = events(send(conn, "conversation.item.create", item=item))
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[0]["previous_item_id"] == "item_f"


def test_client_cannot_create_assistant_audio() -> None:
    conn = started()
    item = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "x"}],
    }
    the_error(send(conn, "conversation.item.create", item=item))
    assert item_ids(conn) == []


def test_retrieve_returns_the_item_with_its_audio() -> None:
    conn = started()
    audio = bytes(range(256)) * 10
    item = {
        "type": "message",
        "role": "user",
        "id": "item_u",
        "content": [{"type": "input_audio", "audio": base64.b64encode(audio).decode()}],
    }
    added = events(send(conn, "conversation.item.create", item=item))
    assert "audio" not in added[0]["item"]["content"][0]  # added/done never carry audio
    out = events(send(conn, "conversation.item.retrieve", item_id="item_u"))
    assert types(out) == ["conversation.item.retrieved"]
    assert base64.b64decode(out[0]["item"]["content"][0]["audio"]) == audio


def test_retrieve_unknown_item_echoes_the_client_event_id() -> None:
    conn = started()
    error = the_error(send(conn, "conversation.item.retrieve", item_id="item_x", event_id="r1"))
    assert (error["type"], error["param"], error["event_id"]) == (
        "invalid_request_error",
        "item_id",
        "r1",
    )
    assert "item_x" in error["message"]


def test_delete_removes_the_item() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    add_user_text(conn, "two", "item_b")
    out = events(send(conn, "conversation.item.delete", item_id="item_a"))
    assert types(out) == ["conversation.item.deleted"]
    assert out[0]["item_id"] == "item_a"
    assert item_ids(conn) == ["item_b"]


def test_delete_unknown_item_echoes_the_client_event_id() -> None:
    conn = started()
    add_user_text(conn, "one", "item_a")
    error = the_error(send(conn, "conversation.item.delete", item_id="item_x", event_id="d1"))
    assert (error["param"], error["event_id"]) == ("item_id", "d1")
    assert item_ids(conn) == ["item_a"]


# -- truncate --------------------------------------------------------------------------------


def spoken_answer(conn: RealtimeConnection) -> str:
    """An assistant audio item: "Hello." over 1000 ms, then " How are you?" over 1000 ms,
    each transcript piece sent just before its audio (as the response runner does)."""
    rid = start_response(conn).response_id
    conn.response_text(rid, "Hello.")
    conn.response_audio(rid, bytes(1000 * MS))
    conn.response_text(rid, " How are you?")
    conn.response_audio(rid, bytes(1000 * MS))
    conn.response_message_done(rid)
    conn.finish_response(rid)
    last = list(conn.conversation)[-1]
    assert last.id is not None
    return last.id


def retrieved(conn: RealtimeConnection, item_id: str) -> dict[str, Any]:
    part: dict[str, Any] = events(send(conn, "conversation.item.retrieve", item_id=item_id))[0][
        "item"
    ]["content"][0]
    return part


def test_truncate_cuts_the_audio_and_keeps_only_the_words_heard() -> None:
    conn = started()
    item_id = spoken_answer(conn)
    out = events(
        send(
            conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=1500
        )
    )
    assert types(out) == ["conversation.item.truncated"]
    assert (out[0]["item_id"], out[0]["content_index"], out[0]["audio_end_ms"]) == (
        item_id,
        0,
        1500,
    )
    part = retrieved(conn, item_id)
    assert len(base64.b64decode(part["audio"])) == 1500 * MS
    assert part["transcript"] == "Hello. How are you?"  # the second piece had started playing

    send(conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=800)
    part = retrieved(conn, item_id)
    assert len(base64.b64decode(part["audio"])) == 800 * MS
    assert part["transcript"] == "Hello."


def test_truncate_at_a_piece_boundary_drops_the_unheard_piece() -> None:
    conn = started()
    item_id = spoken_answer(conn)
    send(conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=1000)
    assert retrieved(conn, item_id)["transcript"] == "Hello."


def test_truncated_transcript_is_what_the_next_response_sees() -> None:
    conn = started()
    item_id = spoken_answer(conn)
    send(conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=0)
    plan = start_response(conn)
    [context] = [i for i in plan.context if i.id == item_id]
    assert context.content[0].transcript == ""  # type: ignore[union-attr]


def test_truncate_beyond_the_audio_length_is_an_error() -> None:
    conn = started()
    item_id = spoken_answer(conn)
    error = the_error(
        send(
            conn,
            "conversation.item.truncate",
            item_id=item_id,
            content_index=0,
            audio_end_ms=2500,
            event_id="t1",
        )
    )
    assert (error["param"], error["event_id"]) == ("audio_end_ms", "t1")
    assert "2000ms" in error["message"] and "2500ms" in error["message"]
    assert len(base64.b64decode(retrieved(conn, item_id)["audio"])) == 2000 * MS


def test_truncate_at_the_exact_length_is_accepted() -> None:
    conn = started()
    item_id = spoken_answer(conn)
    out = send(
        conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=2000
    )
    assert types(events(out)) == ["conversation.item.truncated"]
    assert retrieved(conn, item_id)["transcript"] == "Hello. How are you?"


def test_truncate_a_user_text_item_is_unsupported() -> None:
    conn = started()
    add_user_text(conn, "hi", "item_u")
    error = the_error(
        send(
            conn,
            "conversation.item.truncate",
            item_id="item_u",
            content_index=0,
            audio_end_ms=0,
            event_id="t2",
        )
    )
    assert (error["code"], error["event_id"]) == ("unsupported_content_type", "t2")
    assert "Only model output audio messages can be truncated" in error["message"]


def test_truncate_an_assistant_text_item_is_unsupported() -> None:
    conn = started()
    rid = start_response(conn, output_modalities=["text"]).response_id
    conn.response_text(rid, "Hi")
    conn.finish_response(rid)
    item_id = item_ids(conn)[-1]
    error = the_error(
        send(conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=0)
    )
    assert error["code"] == "unsupported_content_type"


def test_truncate_unknown_item_is_an_error() -> None:
    conn = started()
    error = the_error(
        send(
            conn,
            "conversation.item.truncate",
            item_id="item_x",
            content_index=0,
            audio_end_ms=0,
            event_id="t3",
        )
    )
    assert (error["param"], error["event_id"]) == ("item_id", "t3")


def test_truncate_measures_audio_in_the_format_the_response_used() -> None:
    conn = started()
    rid = start_response(conn, audio={"output": {"format": {"type": "audio/pcmu"}}}).response_id
    conn.response_text(rid, "Hi.")
    conn.response_audio(rid, bytes(8 * 1000))  # G.711: 8 bytes per millisecond
    conn.finish_response(rid)
    item_id = item_ids(conn)[-1]
    assert item_id is not None
    out = send(
        conn, "conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=500
    )
    assert types(events(out)) == ["conversation.item.truncated"]
    assert len(base64.b64decode(retrieved(conn, item_id)["audio"])) == 8 * 500
