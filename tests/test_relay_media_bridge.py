"""The relay's media bookkeeping for server-played clients (WebRTC), sans-IO: audio deltas
become playout, voxgate makes the output_audio_buffer events, and a cut truncates the
upstream's item at the played position."""

from __future__ import annotations

import base64

from voxgate.protocol.commands import ClearOutputAudio, EndOfAudio, PlayAudio
from voxgate.protocol.relay_media import MediaBridge, Relay, Upstream


def delta(rid: str, item: str, pcm: bytes) -> dict[str, object]:
    return {
        "type": "response.output_audio.delta",
        "response_id": rid,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(pcm).decode(),
    }


def relayed_types(outputs: list[object]) -> list[str]:
    return [o.event["type"] for o in outputs if isinstance(o, Relay)]


def test_audio_deltas_are_played_not_passed_on_and_announced_once() -> None:
    bridge = MediaBridge()
    first = bridge.upstream(delta("resp_1", "item_1", b"\1\0" * 480))
    second = bridge.upstream(delta("resp_1", "item_1", b"\2\0" * 480))
    assert relayed_types(first) == ["output_audio_buffer.started"]
    assert [o for o in second if isinstance(o, Relay)] == []
    played = [o for o in first + second if isinstance(o, PlayAudio)]
    assert [p.data for p in played] == [b"\1\0" * 480, b"\2\0" * 480]
    assert {(p.response_id, p.item_id, p.format) for p in played} == {
        ("resp_1", "item_1", "audio/pcm")
    }
    assert not MediaBridge.passes("response.output_audio.delta")
    assert MediaBridge.passes("response.output_audio_transcript.delta")
    done = bridge.upstream({"type": "response.done", "response": {"id": "resp_1"}})
    assert done == [EndOfAudio("resp_1")]
    assert relayed_types(bridge.stopped("resp_1")) == ["output_audio_buffer.stopped"]
    assert bridge.stopped("resp_1") == []  # once


def test_barge_in_clears_and_truncates_upstream_at_the_played_position() -> None:
    bridge = MediaBridge()
    bridge.upstream(delta("resp_1", "item_1", b"\0\0" * 24000))
    assert bridge.upstream({"type": "input_audio_buffer.speech_started"}) == [
        ClearOutputAudio(None)
    ]
    out = bridge.cleared("resp_1", "item_1", 0, 730)
    [upstream] = [o for o in out if isinstance(o, Upstream)]
    assert upstream.event == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 730,
    }
    assert relayed_types(out) == ["output_audio_buffer.cleared"]
    # Audio of the cut response still arriving is not played; nothing plays, so speech
    # does not clear again.
    assert bridge.upstream(delta("resp_1", "item_1", b"\0\0" * 480)) == []
    assert bridge.upstream({"type": "input_audio_buffer.speech_started"}) == []
    assert bridge.stopped("resp_1") == []


def test_speech_with_nothing_playing_and_the_clients_clear() -> None:
    bridge = MediaBridge()
    assert bridge.upstream({"type": "input_audio_buffer.speech_started"}) == []
    assert bridge.client_clear() == []
    bridge.upstream(delta("resp_2", "item_2", b"\0\0" * 480))
    assert bridge.client_clear() == [ClearOutputAudio(None)]


def test_microphone_and_formats_for_the_upstream() -> None:
    mic = MediaBridge.microphone(b"\1\2" * 10)
    assert mic.event == {
        "type": "input_audio_buffer.append",
        "audio": base64.b64encode(b"\1\2" * 10).decode(),
    }
    asked = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    pinned = MediaBridge.session_for_upstream(asked)
    assert pinned["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert pinned["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert asked["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # not changed
