"""The recorder's timeline, the recordings store and the policy fields, without a server."""

from __future__ import annotations

import base64
import wave
from pathlib import Path

import numpy as np

from _helpers_protocol import eventually, validated
from voxgate.audio import PCMU, pcm16_to_ulaw
from voxgate.control.policy import Policy
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.session.clock import VirtualClock
from voxgate.session.disclosure import DEFAULT_PHONE_DISCLOSURE, disclosure_for
from voxgate.session.engines import EngineSet
from voxgate.session.playout import PCM16_8K
from voxgate.session.recording import CallRecorder
from voxgate.session.testing import running_session
from voxgate.storage.recordings import RecordingInfo, RecordingStore


class Frames:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, frames: bytes) -> None:
        self.data += frames

    def close(self) -> None:
        self.closed = True

    def channels(self) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
        both = np.frombuffer(bytes(self.data), "<i2").reshape(-1, 2)
        return both[:, 0], both[:, 1]


def tone(value: int, samples: int) -> bytes:
    return np.full(samples, value, "<i2").tobytes()


async def test_channels_stay_aligned_on_the_clock_across_a_pause() -> None:
    clock, sink = VirtualClock(), Frames()
    rec = CallRecorder(sink, clock, 8000, flush_s=0.5, slack_s=0.1)
    for _ in range(25):  # 0.5 s of both sides in 20 ms frames, as a phone call delivers them
        await clock.advance(0.02)
        rec.caller(tone(1000, 160), PCM16_8K)
        rec.voxgate(tone(-1000, 160), PCM16_8K)
    await clock.advance(1.0)  # the caller's line goes quiet for a second; voxgate too
    rec.caller(tone(2000, 160), PCM16_8K)
    rec.close()
    left, right = sink.channels()
    assert sink.closed and len(left) == len(right)
    # The first half second is both sides; the caller's next word lands after the pause,
    # not straight after their previous one.
    assert (left[:4000] == 1000).all() and (right[:4000] == -1000).all()
    spoken_again = int(np.argmax(left == 2000))
    assert 1.45 * 8000 <= spoken_again <= 1.55 * 8000


async def test_audio_in_any_format_is_recorded_at_the_recording_rate() -> None:
    clock, sink = VirtualClock(), Frames()
    rec = CallRecorder(sink, clock, 8000)
    await clock.advance(0.02)
    rec.caller(pcm16_to_ulaw(tone(8000, 160)), PCMU)
    rec.close()
    left, right = sink.channels()
    assert len(left) == 160 and abs(int(left[80]) - 8000) < 300 and not right.any()


def test_the_store_serves_complete_recordings_and_forgets_expired_and_deleted_ones(
    tmp_path: Path,
) -> None:
    store = RecordingStore(tmp_path / "rec")
    info = RecordingInfo("sess_1", 8000, 100.0, 200.0, key_id="k", user_hash="u1")
    sink = store.start(info)
    assert store.find("sess_1", 150.0) is None  # nothing on disk before the first audio
    sink.write(bytes(4 * 8000))
    partial = store.find("sess_1", 150.0)
    assert partial is not None and not partial.complete  # not served while recording
    sink.close()
    found = store.find("sess_1", 150.0)
    assert found is not None and found.complete and found.seconds == 1.0
    with wave.open(str(store.wav_path("sess_1"))) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (2, 8000, 8000)
    assert store.find("sess_1", 200.0) is None  # expired with the transcript retention
    assert not store.wav_path("sess_1").exists()

    for sid in ("sess_2", "sess_3"):
        other = store.start(RecordingInfo(sid, 8000, 100.0, None, user_hash="u2"))
        other.write(bytes(4))
        other.close()
    assert store.delete("sess_2") and not store.delete("sess_2")
    assert store.delete_user("u2") == 1 and store.find("sess_3", 1e12) is None
    assert store.find("../etc/passwd", 0) is None and not store.delete("../x")


def test_policy_levels_combine_recording_and_disclosure() -> None:
    server = Policy(record_calls=True, disclosure="Calls are recorded.")
    key = Policy(record_calls=False, disclosure="This is Acme's assistant.")
    merged = Policy.strictest(server, None, key)
    assert merged.record_calls is True  # a key cannot opt out of recording
    assert merged.disclosure == "This is Acme's assistant."  # the most specific wording
    assert Policy.strictest(Policy(), Policy(record_calls=False)).record_calls is False
    assert disclosure_for(None, "sip") == DEFAULT_PHONE_DISCLOSURE
    assert disclosure_for(None, "websocket") is None
    assert disclosure_for("", "sip") is None
    assert disclosure_for(" Hi. ", "webrtc") == "Hi."


async def test_over_websocket_the_appends_and_the_sent_reply_are_recorded() -> None:
    sink = Frames()
    engines = EngineSet(llm=ScriptedLLM([text_script("Hi.")]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        run.session.record(CallRecorder(sink, run.clock, 24000))
        await run.transport.events_until("session.created")
        spoken = tone(3000, 2400)  # 100 ms of the caller
        run.transport.send_event(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(spoken).decode()}
        )
        await eventually(lambda: len(run.connection.input_buffer) > 0)
        await run.clock.advance(1.0)  # the reply is asked for a second later
        run.transport.send_event({"type": "response.create"})
        await run.transport.events_until("response.done")
    assert sink.closed
    left, right = sink.channels()
    assert (left[:2400] == 3000).all() and not left[2400:].any()
    # The reply (the scripted voice's tone) starts on the right channel when it was sent.
    first_sound = int(np.argmax(np.abs(right.astype(np.int32)) > 1000))
    assert 0.9 * 24000 <= first_sound <= 1.0 * 24000
