"""Whole turns, event by event, exactly as PROTOCOL.md §11.2 / §11.3 / §11.4 list them, up to
``response.done`` (the ``rate_limits.updated`` those sequences end with is not emitted yet)."""

from __future__ import annotations

from typing import Any

from _helpers_protocol import (
    events,
    pcm_b64,
    plan_of,
    send,
    start_response,
    started,
    types,
    update,
    user_text,
)
from voxgate.protocol.connection import RealtimeConnection

MS = 48
RESPONSE_OPEN = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
AUDIO_CLOSE = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def run_turn(conn: RealtimeConnection, pieces: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """response.create, then each transcript piece and its audio, then the end."""
    out = send(conn, "response.create")
    rid = plan_of(out).response_id
    for text, audio in pieces:
        out += conn.response_text(rid, text)
        out += conn.response_audio(rid, audio)
    out += conn.response_message_done(rid)
    out += conn.finish_response(rid)
    return events(out)


def test_text_turn() -> None:
    conn = started()
    update(conn, output_modalities=["text"])
    user = events(send(conn, "conversation.item.create", item=user_text("Hi", "item_u")))
    assert types(user) == ["conversation.item.added", "conversation.item.done"]
    assert user[0]["item"]["status"] == "completed"

    turn = run_turn(conn, [("Hello", b""), (" there.", b"")])
    assert types(turn) == [
        *RESPONSE_OPEN,
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    added_item, added_conv, part = turn[1]["item"], turn[2], turn[3]["part"]
    assert added_item["role"] == "assistant" and added_item["status"] == "in_progress"
    assert added_item["content"] == []
    assert added_conv["previous_item_id"] == "item_u"
    assert part == {"type": "text", "text": ""}
    assert turn[6]["text"] == "Hello there."
    assert turn[7]["part"] == {"type": "text", "text": "Hello there."}
    assert turn[8]["item"]["content"] == [{"type": "output_text", "text": "Hello there."}]
    assert turn[9]["item"]["status"] == "completed"
    ids = {e["response_id"] for e in turn[1:-1] if "response_id" in e}
    assert ids == {turn[0]["response"]["id"]}


def test_audio_turn_after_a_committed_user_turn() -> None:
    conn = started()
    send(conn, "input_audio_buffer.append", audio=pcm_b64(300))
    commit = events(send(conn, "input_audio_buffer.commit"))
    assert types(commit) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    user_id = commit[0]["item_id"]

    turn = run_turn(conn, [("Hello.", bytes(200 * MS)), (" Bye.", bytes(100 * MS))])
    assert types(turn) == [
        *RESPONSE_OPEN,
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        *AUDIO_CLOSE,
    ]
    assert turn[2]["previous_item_id"] == user_id
    assert turn[3]["part"] == {"type": "audio", "transcript": ""}
    transcript_done, part_done, item_done = turn[9], turn[10], turn[11]
    assert transcript_done["transcript"] == "Hello. Bye."
    assert part_done["part"] == {"type": "audio", "transcript": "Hello. Bye."}
    assert item_done["item"]["content"] == [{"type": "output_audio", "transcript": "Hello. Bye."}]
    done = turn[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["transcript"] == "Hello. Bye."
    assert "audio" not in done["output"][0]["content"][0]  # no audio bytes in response.done
    assert done["usage"]["output_token_details"]["audio_tokens"] == 6  # 300 ms at 20/s
    assert done["usage"]["input_token_details"]["audio_tokens"] == 3  # 300 ms at 10/s


def test_function_call_round_trip() -> None:
    conn = started()
    rid = start_response(conn).response_id
    out = conn.response_call(rid, "item_f", "call_7", "get_weather")
    out += conn.response_call_arguments(rid, "item_f", '{"city":')
    out += conn.response_call_arguments(rid, "item_f", '"Paris"}')
    out += conn.response_call_done(rid, "item_f")
    out += conn.finish_response(rid)
    turn = events(out)
    assert types(turn) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert turn[0]["item"] == {
        "id": "item_f",
        "type": "function_call",
        "name": "get_weather",
        "call_id": "call_7",
        "arguments": "",
        "status": "in_progress",
    }
    assert turn[4]["arguments"] == '{"city":"Paris"}' and turn[4]["name"] == "get_weather"
    assert turn[5]["item"]["status"] == "completed"
    assert turn[-1]["response"]["output"][0]["arguments"] == '{"city":"Paris"}'

    result = {"type": "function_call_output", "call_id": "call_7", "output": "sunny"}
    back = events(send(conn, "conversation.item.create", item=result))
    assert types(back) == ["conversation.item.added", "conversation.item.done"]
    assert types(events(send(conn, "response.create"))) == ["response.created"]


def test_a_spoken_message_then_a_call_in_one_response() -> None:
    conn = started()
    rid = start_response(conn).response_id
    out = conn.response_text(rid, "Let me check.")
    out += conn.response_audio(rid, bytes(50 * MS))
    out += conn.response_call(rid, "item_f", "call_1", "lookup")
    out += conn.response_call_done(rid, "item_f")
    out += conn.finish_response(rid)
    turn = events(out)
    indexes = [
        (e["type"], e["output_index"]) for e in turn if e["type"].startswith("response.output_item")
    ]
    assert indexes == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
    ]
    assert [i["type"] for i in turn[-1]["response"]["output"]] == ["message", "function_call"]
