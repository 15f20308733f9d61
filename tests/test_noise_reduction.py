"""``audio.input.noise_reduction``: WebRTC's noise suppressor cleans what turn detection and
speech-to-text hear."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from _espeak import speak, white_noise
from _helpers_protocol import validated
from voxgate.audio.denoise import NoiseSuppressor, suppression_level
from voxgate.audio.resample import resample
from voxgate.engines.base import Transcript
from voxgate.engines.testing import ScriptedLLM, ScriptedSTT, ScriptedTTS, ScriptedVAD
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session

RATE = 24000


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2)))


def db(ratio: float) -> float:
    return float(20 * np.log10(ratio))


# -- the suppressor -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["near_field", "far_field"])
def test_noise_is_suppressed_and_speech_kept(kind: Any) -> None:
    noise = white_noise(3, dbfs=-30)
    speech = speak("one two three four five")
    suppressor = NoiseSuppressor(kind)
    cleaned_noise = suppressor.process(noise)
    cleaned_speech = suppressor.process(speech) + suppressor.flush()
    assert len(cleaned_noise) + len(cleaned_speech) == len(noise) + len(speech)
    assert db(rms(cleaned_noise[-32000:]) / rms(noise[-32000:])) < -10  # at least 10 dB less
    assert db(rms(cleaned_speech) / rms(speech)) > -6  # speech mostly kept


def test_strength_picks_the_level() -> None:
    assert [suppression_level(s) for s in (0.0, 0.1, 0.5, 0.9, 1.0)] == [0, 0, 2, 4, 4]
    noise = white_noise(2, dbfs=-30)
    off, full = NoiseSuppressor("near_field", 0.0), NoiseSuppressor("near_field", 1.0)
    assert db(rms(off.process(noise)[-16000:]) / rms(noise[-16000:])) > -3  # level 0: off
    assert db(rms(full.process(noise)[-16000:]) / rms(noise[-16000:])) < -10


def test_other_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="16000"):
        NoiseSuppressor("near_field", sample_rate=8000)


# -- in a session -------------------------------------------------------------------------


def append(transport: MemoryTransport, audio: bytes) -> None:
    for i in range(0, len(audio), 960):
        piece = base64.b64encode(audio[i : i + 960]).decode()
        transport.send_event({"type": "input_audio_buffer.append", "audio": piece})


def noisy_speech() -> bytes:
    """2 s of noise loud enough to pass the scripted VAD, speech, then 1 s more noise."""
    noise = white_noise(2, dbfs=-30, sample_rate=RATE)
    speech = speak("one two three four five", sample_rate=RATE)
    tail = white_noise(1, dbfs=-30, sample_rate=RATE, seed=1)
    mixed = np.frombuffer(speech, dtype="<i2").astype(np.int32)
    mixed += np.frombuffer(
        white_noise(len(speech) / 2 / RATE, dbfs=-30, sample_rate=RATE, seed=2)[: len(speech)],
        dtype="<i2",
    )
    return noise + np.clip(mixed, -32768, 32767).astype("<i2").tobytes() + tail


async def first_speech_ms(noise_reduction: dict[str, Any] | None) -> int:
    engines = EngineSet(
        llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=ScriptedSTT(["heard"]), vad=ScriptedVAD()
    )
    async with running_session(engines, validate=validated) as run:
        transport = run.transport
        await transport.next_event()
        audio_input = {
            "noise_reduction": noise_reduction,
            "turn_detection": {"type": "server_vad", "create_response": False},
        }
        transport.send_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": audio_input}},
            }
        )
        await transport.events_until("session.updated")
        append(transport, noisy_speech())
        started = await transport.events_until("input_audio_buffer.speech_started")
        return int(started[-1]["audio_start_ms"])


async def test_noise_alone_no_longer_starts_a_turn() -> None:
    # Without suppression the noise is "speech" from the start; with it, only the speech is.
    assert await first_speech_ms(None) < 500
    assert await first_speech_ms({"type": "near_field"}) > 1500


class RecordingSTT:
    """Speech to text that keeps the audio it was given."""

    name = "recording-stt"
    sample_rate = 16000
    logprobs = False

    def __init__(self) -> None:
        self.audio = bytearray()

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> Any:
        outer = self

        class Stream:
            async def push(self, pcm: bytes) -> str | None:
                outer.audio += pcm
                return None

            async def finish(self) -> Transcript:
                return Transcript("", len(outer.audio) / 32000)

            async def aclose(self) -> None:
                pass

        return Stream()

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("setting", [None, {"type": "far_field", "strength": 1.0}])
async def test_committed_audio_is_cleaned_before_transcription(setting: Any) -> None:
    stt = RecordingSTT()
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=stt)
    noise = white_noise(2, dbfs=-30, sample_rate=RATE)
    async with running_session(engines, validate=validated) as run:
        transport = run.transport
        await transport.next_event()
        audio_input = {
            "noise_reduction": setting,
            "turn_detection": None,
            "transcription": {"model": "whisper-1"},
        }
        transport.send_event(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": audio_input}},
            }
        )
        await transport.events_until("session.updated")
        append(transport, noise)
        transport.send_event({"type": "input_audio_buffer.commit"})
        await transport.events_until("conversation.item.input_audio_transcription.completed")
    heard = rms(bytes(stt.audio[16000:]))  # after the suppressor has settled
    sent = rms(resample(noise, RATE, 16000))
    if setting is None:
        assert heard == pytest.approx(sent, rel=0.1)
    else:
        assert db(heard / sent) < -10
