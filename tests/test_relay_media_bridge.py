"""The relay's playout bookkeeping for server-played clients (WebRTC), sans-IO: voxgate
announces and ends each response's audio, barge-in clears only what plays, a cut truncates
the upstream's item at the played position and mutes the rest of that response."""

from __future__ import annotations

from voxgate.protocol.relay_media import MediaBridge


def test_a_response_is_announced_once_and_stopped_once_played() -> None:
    bridge = MediaBridge(set())
    play, started = bridge.audio("resp_1")
    assert play and started is not None
    assert started["type"] == "output_audio_buffer.started"
    assert started["response_id"] == "resp_1" and started["event_id"].startswith("event_")
    assert bridge.audio("resp_1") == (True, None)
    assert bridge.audio_done("resp_1")
    stopped = bridge.stopped("resp_1")
    assert stopped is not None and stopped["type"] == "output_audio_buffer.stopped"
    assert bridge.stopped("resp_1") is None
    assert not bridge.audio_done("resp_unknown")


def test_barge_in_truncates_at_the_played_position_and_mutes_the_rest() -> None:
    bridge = MediaBridge(set())
    assert not bridge.barge_in()  # nothing plays: speech clears nothing
    bridge.audio("resp_1")
    assert bridge.barge_in()
    truncate, cleared = bridge.cut("resp_1", "item_1", 0, 730)
    assert truncate == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 730,
    }
    assert cleared["type"] == "output_audio_buffer.cleared"
    assert cleared["response_id"] == "resp_1"
    # The cut response's audio still arriving is not played, and nothing plays now.
    assert bridge.audio("resp_1") == (False, None)
    assert not bridge.barge_in()
    assert bridge.stopped("resp_1") is None
    # Its audio ends; the next response plays as usual.
    assert not bridge.audio_done("resp_1")
    play, started = bridge.audio("resp_2")
    assert play and started is not None


def test_what_plays_is_shared_with_whoever_serves_the_session_next() -> None:
    playing: set[str] = set()
    bridge = MediaBridge(playing)
    bridge.audio("resp_1")
    assert playing == {"resp_1"}
    # A relay that takes over (failover, renewal) sees it playing: barge-in clears it.
    successor = MediaBridge(playing)
    assert successor.barge_in()
    successor.cut("resp_1", "item_1", 0, 500)
    assert playing == set()
