"""Server-side playout (WebRTC, SIP) in the sans-IO connection: audio leaves as commands for
the transport, `output_audio_buffer.*` events bracket it, and a cut truncates the item at
what was played (PROTOCOL.md §5.2, §5.3, §11.2 WebRTC variant)."""

from __future__ import annotations

from _helpers_protocol import (
    add_user_text,
    commands,
    effects,
    events,
    send,
    start_response,
    started,
    types,
)
from voxgate.protocol.commands import CancelResponse, ClearOutputAudio, EndOfAudio, PlayAudio

MS_100 = bytes(2 * 2400)  # 100 ms of 24 kHz PCM16


def test_reply_audio_goes_to_the_playout_not_the_event_stream() -> None:
    conn = started(server_playout=True)
    add_user_text(conn, "Hi", "item_u")
    rid = start_response(conn).response_id
    first = conn.response_audio(rid, MS_100)
    second = conn.response_audio(rid, MS_100)
    assert types(events(first)) == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
    ]
    assert events(second) == []  # started once per response
    plays = [c for c in commands([*first, *second]) if isinstance(c, PlayAudio)]
    assert [(p.response_id, p.data, p.format) for p in plays] == [(rid, MS_100, "audio/pcm")] * 2
    done = conn.finish_response(rid)
    assert types(events(done))[-1] == "response.done"
    assert effects(done) == [EndOfAudio(rid)]
    stopped = events(conn.output_audio_stopped(rid))
    assert [(e["type"], e["response_id"]) for e in stopped] == [
        ("output_audio_buffer.stopped", rid)
    ]
    assert conn.output_audio_stopped(rid) == []  # only once


def test_without_server_playout_audio_is_a_delta_event() -> None:
    conn = started()
    add_user_text(conn, "Hi", "item_u")
    rid = start_response(conn).response_id
    out = conn.response_audio(rid, MS_100)
    assert types(events(out))[-1] == "response.output_audio.delta"
    assert commands(out) == []


def test_a_cut_truncates_the_item_at_what_was_played() -> None:
    conn = started(server_playout=True)
    add_user_text(conn, "Hi", "item_u")
    rid = start_response(conn).response_id
    conn.response_text(rid, "Hello ")
    out = conn.response_audio(rid, MS_100 * 5)
    item_id = next(c.item_id for c in commands(out) if isinstance(c, PlayAudio))
    conn.response_text(rid, "there.")
    conn.response_audio(rid, MS_100 * 5)
    cut = events(conn.output_audio_cleared(rid, item_id, 0, 300))
    assert [e["type"] for e in cut] == [
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
    ]
    assert cut[0]["response_id"] == rid
    assert (cut[1]["item_id"], cut[1]["audio_end_ms"]) == (item_id, 300)
    # The transcript keeps only what was said in the audio the user heard.
    item = conn.conversation.get(item_id)
    assert item.content[0].transcript == "Hello "
    # No stopped after a clear.
    conn.finish_response(rid)
    assert conn.output_audio_stopped(rid) == []


def test_speech_over_a_reply_cancels_it_and_clears_the_playout() -> None:
    conn = started(server_playout=True)
    add_user_text(conn, "Hi", "item_u")
    rid = start_response(conn).response_id
    conn.response_audio(rid, MS_100)
    out = conn.speech_started("item_next", 1000)
    assert types(events(out))[0] == "input_audio_buffer.speech_started"
    assert effects(out) == [EndOfAudio(rid), CancelResponse(rid), ClearOutputAudio(None)]


def test_speech_after_the_reply_finished_still_clears_what_plays() -> None:
    conn = started(server_playout=True)
    add_user_text(conn, "Hi", "item_u")
    rid = start_response(conn).response_id
    conn.response_audio(rid, MS_100)
    conn.finish_response(rid)
    assert commands(conn.speech_started("item_next", 1000)) == [ClearOutputAudio(None)]


def test_the_client_clear_event_asks_the_playout() -> None:
    conn = started(server_playout=True)
    assert commands(send(conn, "output_audio_buffer.clear")) == [ClearOutputAudio(None)]


def test_track_audio_fills_the_input_buffer_and_drops_the_oldest_when_full() -> None:
    conn = started(server_playout=True, max_buffer_bytes=len(MS_100) * 2)
    for i in range(3):
        conn.append_track_audio(bytes([i]) * len(MS_100))
    assert len(conn.input_buffer) == len(MS_100) * 2
    assert conn.input_buffer[0] == 1  # the first 100 ms went
    assert conn.input_audio_ms == 300
