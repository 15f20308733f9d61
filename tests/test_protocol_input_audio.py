"""input_audio_buffer.append / commit / clear (PROTOCOL.md §6.2, §8, §11.8)."""

from __future__ import annotations

import base64
import json

import pytest

from _helpers_protocol import commands, events, pcm_b64, send, started, the_error, types, update
from voxgate.protocol.commands import InputAudio, TranscribeItem
from voxgate.protocol.input_buffer import MAX_APPEND_BYTES


def test_append_sends_nothing_back_and_hands_the_audio_to_turn_detection() -> None:
    conn = started()
    out = send(conn, "input_audio_buffer.append", audio=pcm_b64(40))
    assert events(out) == []
    assert commands(out) == [InputAudio(bytes(40 * 48), "audio/pcm")]


def test_commit_makes_a_user_audio_item() -> None:
    conn = started()
    send(
        conn,
        "conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "id": "item_a",
            "content": [{"type": "input_text", "text": "hi"}],
        },
    )
    send(conn, "input_audio_buffer.append", audio=pcm_b64(150))
    out = events(send(conn, "input_audio_buffer.commit"))
    assert types(out) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    item_id = out[0]["item_id"]
    assert [out[1]["item"]["id"], out[2]["item"]["id"]] == [item_id, item_id]
    assert [e["previous_item_id"] for e in out] == ["item_a"] * 3
    assert out[2]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert len(conn.conversation.audio[item_id]) == 150 * 48


def test_commit_empties_the_buffer() -> None:
    conn = started()
    send(conn, "input_audio_buffer.append", audio=pcm_b64(150))
    send(conn, "input_audio_buffer.commit")
    error = the_error(send(conn, "input_audio_buffer.commit"))
    assert error["code"] == "input_audio_buffer_commit_empty"


def test_commit_under_100_ms_says_how_much_audio_there_was() -> None:
    conn = started()
    send(conn, "input_audio_buffer.append", audio=pcm_b64(50))
    error = the_error(send(conn, "input_audio_buffer.commit", event_id="k1"))
    assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "k1")
    assert "100ms" in error["message"] and "50.00ms" in error["message"]
    assert len(conn.conversation) == 0
    # The audio stays buffered: 60 ms more makes a valid commit.
    send(conn, "input_audio_buffer.append", audio=pcm_b64(60))
    assert (
        types(events(send(conn, "input_audio_buffer.commit")))[0] == "input_audio_buffer.committed"
    )


def test_every_commit_asks_for_a_transcript() -> None:
    conn = started()
    update(conn, audio={"input": {"transcription": {"model": "whisper-1"}}})
    send(conn, "input_audio_buffer.append", audio=pcm_b64(100))
    out = send(conn, "input_audio_buffer.commit")
    [command] = commands(out)
    assert isinstance(command, TranscribeItem)
    assert command.item_id == events(out)[0]["item_id"]
    assert len(command.audio) == 100 * 48


def test_clear_drops_the_buffered_audio() -> None:
    conn = started()
    send(conn, "input_audio_buffer.append", audio=pcm_b64(200))
    assert types(events(send(conn, "input_audio_buffer.clear"))) == ["input_audio_buffer.cleared"]
    error = the_error(send(conn, "input_audio_buffer.commit"))
    assert "0.00ms" in error["message"]


def test_invalid_base64_is_an_error_and_buffers_nothing() -> None:
    conn = started()
    error = the_error(send(conn, "input_audio_buffer.append", audio="not base64!!", event_id="a1"))
    assert (error["param"], error["event_id"]) == ("audio", "a1")
    assert "base64" in error["message"]
    assert len(conn.input_buffer) == 0


def test_oversized_append_is_refused_with_a_clear_message() -> None:
    conn = started()
    too_big = "A" * (MAX_APPEND_BYTES * 4 // 3 + 8)
    error = the_error(
        conn.receive(json.dumps({"type": "input_audio_buffer.append", "audio": too_big}))
    )
    assert error["param"] == "audio"
    assert "15 MiB" in error["message"]
    assert len(conn.input_buffer) == 0


def test_append_past_the_buffer_limit_is_refused() -> None:
    conn = started(max_buffer_bytes=48 * 1000)
    send(conn, "input_audio_buffer.append", audio=pcm_b64(900))
    error = the_error(send(conn, "input_audio_buffer.append", audio=pcm_b64(200)))
    assert error["code"] == "input_audio_buffer_full"
    assert len(conn.input_buffer) == 900 * 48


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_input_counts_8_bytes_per_millisecond(fmt: str) -> None:
    conn = started()
    update(conn, audio={"input": {"format": {"type": fmt}}})
    send(conn, "input_audio_buffer.append", audio=base64.b64encode(bytes(792)).decode())
    error = the_error(send(conn, "input_audio_buffer.commit"))
    assert "99.00ms" in error["message"]
    out = send(conn, "input_audio_buffer.append", audio=base64.b64encode(bytes(8)).decode())
    assert commands(out) == [InputAudio(bytes(8), fmt)]
    assert (
        types(events(send(conn, "input_audio_buffer.commit")))[0] == "input_audio_buffer.committed"
    )
    assert conn.input_audio_ms == 100
