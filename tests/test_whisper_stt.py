"""faster-whisper speech to text.

No Whisper weights can be downloaded here, so there is no test with a real model: start-up
checks run against real directories and the real loader, and the stream's buffering and
hand-off to the model run against a stand-in model that records what it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from voxgate.engines.base import STTEngine, STTStream
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local.whisper import SAMPLE_RATE, WhisperEngine

# ---------------------------------------------------------------------------------------------
# A model that cannot be used says why at start-up
# ---------------------------------------------------------------------------------------------


async def expect_unavailable(path: Path, *fragments: str) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        await WhisperEngine.load(path)
    message = caught.value.message
    for fragment in (str(path), *fragments):
        assert fragment in message, message
    # Says what to supply instead.
    assert "CTranslate2" in message and "ct2-transformers-converter" in message
    assert caught.value.origin == "stt"


async def test_missing_model_directory(tmp_path: Path) -> None:
    await expect_unavailable(tmp_path / "whisper-base", "does not exist")


async def test_directory_without_model_files(tmp_path: Path) -> None:
    await expect_unavailable(tmp_path, "lacks model.bin, config.json, tokenizer.json")


async def test_directory_without_tokenizer(tmp_path: Path) -> None:
    # Without tokenizer.json faster-whisper would try to download one.
    (tmp_path / "model.bin").write_bytes(b"\0")
    (tmp_path / "config.json").write_text("{}")
    await expect_unavailable(tmp_path, "lacks tokenizer.json")


async def test_file_instead_of_directory(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    await expect_unavailable(path, "is not a directory")


async def test_model_files_that_are_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a CTranslate2 model")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    await expect_unavailable(tmp_path, "cannot load faster-whisper model")


# ---------------------------------------------------------------------------------------------
# Streams, on a stand-in model
# ---------------------------------------------------------------------------------------------


@dataclass
class StandInModel:
    """Answers like faster_whisper.WhisperModel.transcribe: lazy segments plus info."""

    multilingual: bool = True
    text: str = " Hello there. "
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model(self) -> Any:
        return SimpleNamespace(is_multilingual=self.multilingual)

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Any, Any]:
        self.calls.append({"audio": audio, **options})

        def segments() -> Any:
            yield SimpleNamespace(text=self.text)
            yield SimpleNamespace(text=" How are you? ")

        return segments(), SimpleNamespace(duration=audio.size / SAMPLE_RATE)


def ramp(samples: int) -> bytes:
    return (np.arange(samples, dtype=np.int64) % 65536 - 32768).astype("<i2").tobytes()


async def test_buffers_then_transcribes_the_whole_utterance() -> None:
    model = StandInModel()
    engine = WhisperEngine(model)
    assert isinstance(engine, STTEngine)
    stream = await engine.open_stream(language="en-US")
    assert isinstance(stream, STTStream)
    pcm = ramp(SAMPLE_RATE * 2)  # two seconds
    for start in range(0, len(pcm), 3201):  # odd-sized pushes split samples across calls
        assert await stream.push(pcm[start : start + 3201]) is None
    assert model.calls == []  # nothing is decoded before the end

    transcript = await stream.finish()

    assert transcript.text == "Hello there. How are you?"
    assert transcript.audio_seconds == pytest.approx(2.0)
    (call,) = model.calls
    assert call["language"] == "en"
    audio = call["audio"]
    assert audio.dtype == np.float32 and audio.size == SAMPLE_RATE * 2
    assert audio.min() == -1.0 and audio.max() < 1.0
    expected = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    np.testing.assert_array_equal(audio, expected)


async def test_empty_utterance_is_not_sent_to_the_model() -> None:
    model = StandInModel()
    stream = await WhisperEngine(model).open_stream()
    transcript = await stream.finish()
    assert (transcript.text, transcript.audio_seconds, model.calls) == ("", 0.0, [])


async def test_english_only_model_refuses_other_languages() -> None:
    engine = WhisperEngine(StandInModel(multilingual=False))
    with pytest.raises(EngineError, match="English-only"):
        await engine.open_stream(language="fr")
    await engine.open_stream(language="en")
    await engine.open_stream()  # no language: the model's own


async def test_utterance_length_is_bounded() -> None:
    engine = WhisperEngine(StandInModel(), max_utterance_s=1.0)
    stream = await engine.open_stream()
    await stream.push(ramp(SAMPLE_RATE))
    with pytest.raises(EngineError, match="longer than 1 s"):
        await stream.push(ramp(1))


async def test_transcription_runs_off_the_event_loop() -> None:
    model = StandInModel()
    slow_transcribe = model.transcribe

    def blocking(audio: np.ndarray, **options: Any) -> tuple[Any, Any]:
        time.sleep(0.3)
        return slow_transcribe(audio, **options)

    model.transcribe = blocking  # type: ignore[method-assign]
    stream = await WhisperEngine(model).open_stream()
    await stream.push(ramp(1600))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await stream.finish()
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert ticks >= 10  # the loop kept running while the model worked


async def test_abandoned_transcription_keeps_its_slot_until_it_ends() -> None:
    # CTranslate2 cannot be interrupted: a second utterance must not start decoding beside
    # one whose caller gave up, or abandoned decodings would pile up on the CPU.
    model = StandInModel()
    started, release = threading.Event(), threading.Event()
    answer = model.transcribe

    def blocking(audio: np.ndarray, **options: Any) -> tuple[Any, Any]:
        result = answer(audio, **options)
        started.set()
        release.wait(10)
        return result

    model.transcribe = blocking  # type: ignore[method-assign]
    engine = WhisperEngine(model)
    first, second = await engine.open_stream(), await engine.open_stream()
    await first.push(ramp(1600))
    await second.push(ramp(1600))
    abandoned = asyncio.create_task(first.finish())
    assert await asyncio.to_thread(started.wait, 5)
    abandoned.cancel()
    waiting = asyncio.create_task(second.finish())
    await asyncio.sleep(0.2)
    assert len(model.calls) == 1 and not waiting.done()
    release.set()
    assert (await waiting).text == "Hello there. How are you?"
    assert len(model.calls) == 2
    with contextlib.suppress(asyncio.CancelledError):
        await abandoned


async def test_closed_stream_and_engine_refuse() -> None:
    engine = WhisperEngine(StandInModel())
    stream = await engine.open_stream()
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await stream.push(ramp(10))
    await engine.aclose()
    with pytest.raises(EngineError, match="closed"):
        await engine.open_stream()
