"""Silero VAD engine: real speech, silence, noise, chunking and per-stream state."""

from __future__ import annotations

import numpy as np
import pytest

from _espeak import silence, speak, white_noise
from voxgate.engines.base import VADEngine, VADStream
from voxgate.engines.errors import EngineUnavailable
from voxgate.engines.local import silero
from voxgate.engines.local.silero import WINDOW_SAMPLES, SileroVAD

WINDOW_SECONDS = WINDOW_SAMPLES / 16000


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def utterance() -> tuple[bytes, float, float]:
    """One second of silence, a sentence, one second of silence; with the speech bounds."""
    speech = speak("I would like to order a pizza with mushrooms")
    lead = silence(1.0)
    start = len(lead) / 32000
    return lead + speech + silence(1.0), start, start + len(speech) / 32000


def window_times(probs: list[float]) -> np.ndarray:
    return np.arange(len(probs)) * WINDOW_SECONDS


def test_implements_the_engine_interfaces(vad: SileroVAD) -> None:
    assert isinstance(vad, VADEngine)
    stream = vad.open_stream()
    assert isinstance(stream, VADStream)
    assert (vad.sample_rate, stream.window_samples) == (16000, 512)


def test_speech_is_high_and_silence_is_low(
    vad: SileroVAD, utterance: tuple[bytes, float, float]
) -> None:
    pcm, start, end = utterance
    probs = np.array(vad.open_stream().process(pcm))
    times = window_times(list(probs))
    assert len(probs) == len(pcm) // (2 * WINDOW_SAMPLES)
    # Leave 0.2 s at each edge: the model needs a few windows to react and to let go.
    speaking = probs[(times > start + 0.2) & (times < end - 0.2)]
    before = probs[times < start - 0.1]
    after = probs[times > end + 0.3]
    assert np.mean(speaking > 0.5) > 0.8, speaking.round(2)
    assert before.max() < 0.2 and after.max() < 0.2


@pytest.mark.parametrize("dbfs", [-35.0, -25.0])
def test_white_noise_is_not_speech(vad: SileroVAD, dbfs: float) -> None:
    probs = vad.open_stream().process(white_noise(3.0, dbfs=dbfs))
    assert max(probs) < 0.3


def test_any_chunking_gives_the_same_probabilities(
    vad: SileroVAD, utterance: tuple[bytes, float, float]
) -> None:
    pcm, _, _ = utterance
    whole = vad.open_stream().process(pcm)
    stream = vad.open_stream()
    chunked: list[float] = []
    # Odd sizes split samples in half and windows anywhere.
    sizes = [1, 333, 1023, 1, 4097, 2048, 77]
    position, turn = 0, 0
    while position < len(pcm):
        size = sizes[turn % len(sizes)]
        chunked += stream.process(pcm[position : position + size])
        position, turn = position + size, turn + 1
    assert chunked == pytest.approx(whole, abs=1e-5)


def test_leftover_waits_for_a_complete_window(vad: SileroVAD) -> None:
    stream = vad.open_stream()
    assert stream.process(b"") == []
    assert stream.process(silence(511 / 16000)) == []
    assert len(stream.process(b"\0\0")) == 1
    assert len(stream.process(silence(3 * WINDOW_SECONDS) + b"\0")) == 3


def test_streams_keep_independent_state(
    vad: SileroVAD, utterance: tuple[bytes, float, float]
) -> None:
    pcm, _, _ = utterance
    quiet = silence(len(pcm) / 32000)
    alone_speech = vad.open_stream().process(pcm)
    alone_quiet = vad.open_stream().process(quiet)
    a, b = vad.open_stream(), vad.open_stream()
    mixed_speech: list[float] = []
    mixed_quiet: list[float] = []
    step = 3200
    for i in range(0, len(pcm), step):
        mixed_speech += a.process(pcm[i : i + step])
        mixed_quiet += b.process(quiet[i : i + step])
    assert mixed_speech == pytest.approx(alone_speech, abs=1e-5)
    assert mixed_quiet == pytest.approx(alone_quiet, abs=1e-5)


def test_reset_forgets_everything(vad: SileroVAD, utterance: tuple[bytes, float, float]) -> None:
    pcm, _, _ = utterance
    stream = vad.open_stream()
    first = stream.process(pcm)
    stream.process(speak("something else") + b"\1")  # leaves state, context and a leftover
    stream.reset()
    assert stream.process(pcm) == pytest.approx(first, abs=1e-5)


def test_matches_faster_whispers_own_use_of_the_model(
    vad: SileroVAD, utterance: tuple[bytes, float, float]
) -> None:
    """Cross-check the context handling against the wheel's reference implementation."""
    from faster_whisper.vad import SileroVADModel

    pcm, _, _ = utterance
    usable = len(pcm) // (2 * WINDOW_SAMPLES) * 2 * WINDOW_SAMPLES
    audio = np.frombuffer(pcm[:usable], dtype=np.int16).astype(np.float32) / 32768
    reference = SileroVADModel(str(silero.find_model()))(audio).reshape(-1)
    ours = vad.open_stream().process(pcm)
    assert ours == pytest.approx(reference.tolist(), abs=1e-4)


def test_missing_model_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silero, "_MODEL_PACKAGE", "no_such_package_for_voxgate")
    with pytest.raises(EngineUnavailable, match="faster-whisper") as caught:
        silero.find_model()
    assert caught.value.origin == "vad"
