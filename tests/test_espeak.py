"""The embedded espeak-ng TTS engine: real speech, voices, speed, streaming, abort, sharing."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, nullcontext

import numpy as np
import pytest

from voxgate.engines.base import TTSEngine
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local import espeak
from voxgate.engines.local.espeak import EspeakTTS, split_text
from voxgate.engines.local.voices import OPENAI_VOICES, resolve_voice, speaking_rate

RATE = 22050
HELLO = "Hello world, this is a test."
PARAGRAPH = (
    "The weather today is sunny with a light breeze from the west. "
    "Later this evening, clouds will gather and a little rain may fall. "
    "Tomorrow should be dry again."
)
FEMALE = ["alloy", "coral", "sage", "shimmer", "marin"]
MALE = ["ash", "ballad", "echo", "verse", "cedar"]


@pytest.fixture
async def engine() -> AsyncIterator[EspeakTTS]:
    tts = EspeakTTS()
    await tts.warm_up()  # so that timings below measure synthesis, not loading
    yield tts
    await tts.aclose()


async def speak(tts: EspeakTTS, text: str, voice: str = "alloy", speed: float = 1.0) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text, voice=voice, speed=speed)])


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / RATE


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x**2)))


def median_pitch_hz(pcm: bytes) -> float:
    """Median fundamental frequency over the loud (voiced) frames, by autocorrelation."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frame, lo, hi = 1024, RATE // 500, RATE // 60
    level = np.sqrt(np.mean(x**2))
    found = []
    for start in range(0, len(x) - frame, 256):
        f = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(f**2)) < 0.5 * level:
            continue
        ac = np.fft.irfft(np.abs(np.fft.rfft(f, 2 * frame)) ** 2)[:frame]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(RATE / lag)
    assert len(found) > 20, "no voiced speech found"
    return float(np.median(found))


async def time_to_first_chunk(tts: EspeakTTS, text: str) -> float:
    start = time.perf_counter()
    async with aclosing(tts.synthesize(text, voice="alloy")) as chunks:
        async for _ in chunks:
            return time.perf_counter() - start
    raise AssertionError("no audio")


def test_is_a_tts_engine() -> None:
    tts = EspeakTTS()
    assert isinstance(tts, TTSEngine)
    assert tts.sample_rate == RATE


async def test_speaks_audible_speech_of_plausible_length(engine: EspeakTTS) -> None:
    pcm = await speak(engine, HELLO)
    assert 1.0 <= seconds(pcm) <= 4.0
    assert rms(pcm) > 500  # clearly louder than silence or dither
    assert 80 <= median_pitch_hz(pcm) <= 400  # voiced, in the range of a human voice


async def test_audio_streams_in_chunks_and_starts_fast(engine: EspeakTTS) -> None:
    chunks = [chunk async for chunk in engine.synthesize(PARAGRAPH, voice="alloy")]
    assert len(chunks) > 10
    assert all(len(c) % 2 == 0 and c for c in chunks)
    first = min([await time_to_first_chunk(engine, PARAGRAPH) for _ in range(5)])
    assert first < 0.02


async def test_nothing_to_say_yields_nothing(engine: EspeakTTS) -> None:
    assert await speak(engine, "  \n ") == b""


async def test_female_voices_sound_higher_than_male_voices(engine: EspeakTTS) -> None:
    pitch = {v: median_pitch_hz(await speak(engine, PARAGRAPH, voice=v)) for v in FEMALE + MALE}
    assert min(pitch[v] for v in FEMALE) > 1.3 * max(pitch[v] for v in MALE)


async def test_every_openai_voice_sounds_different(engine: EspeakTTS) -> None:
    measured = {}
    for voice in OPENAI_VOICES:
        pcm = await speak(engine, PARAGRAPH, voice=voice)
        measured[voice] = (median_pitch_hz(pcm), seconds(pcm))
    for a, b in itertools.combinations(measured, 2):
        (pitch_a, len_a), (pitch_b, len_b) = measured[a], measured[b]
        assert abs(pitch_a / pitch_b - 1) > 0.03 or abs(len_a / len_b - 1) > 0.03, (a, b)


async def test_espeak_voice_names_work_and_unknown_names_fall_back(
    engine: EspeakTTS, caplog: pytest.LogCaptureFixture
) -> None:
    default_pitch = median_pitch_hz(await speak(engine, PARAGRAPH, voice="alloy"))
    deep = median_pitch_hz(await speak(engine, PARAGRAPH, voice="en-us+m7"))
    assert deep < 0.7 * default_pitch
    missing = f"no-such-voice-{uuid.uuid4().hex}"  # the warning is logged once per name
    unknown = median_pitch_hz(await speak(engine, PARAGRAPH, voice=missing))
    assert unknown == pytest.approx(default_pitch, rel=0.05)
    assert missing in caplog.text


async def test_speed_changes_duration(engine: EspeakTTS) -> None:
    slow, normal, fast = [seconds(await speak(engine, PARAGRAPH, speed=s)) for s in (0.5, 1, 1.5)]
    assert 1.5 < slow / normal < 2.5
    assert 1.2 < normal / fast < 1.8


async def test_speed_outside_the_api_range_is_rejected(engine: EspeakTTS) -> None:
    with pytest.raises(ValueError, match=r"between 0.25 and 1.5, got 2.0"):
        await speak(engine, HELLO, speed=2.0)


LONG_TEXT = " ".join(["one two three four five six seven eight nine ten"] * 400)


async def test_closing_the_stream_aborts_synthesis_at_once() -> None:
    # One piece of ~15 minutes of speech (over a second of work) unless the abort lands.
    tts = EspeakTTS(piece_chars=1_000_000)
    async with aclosing(tts.synthesize(LONG_TEXT, voice="alloy")) as chunks:
        async for _ in chunks:
            break
    start = time.perf_counter()
    after = await speak(tts, HELLO)  # queued behind the aborted synthesis, if it still ran
    assert time.perf_counter() - start < 0.5
    assert 1.0 <= seconds(after) <= 4.0


async def reader_cancelled_after_first_chunk(
    tts: EspeakTTS, *, close: bool
) -> AsyncGenerator[bytes, None]:
    """The stream a reader task was reading when it was cancelled (kept referenced)."""
    started = asyncio.Event()
    stream = tts.synthesize(LONG_TEXT, voice="echo")

    async def read() -> None:
        async with aclosing(stream) if close else nullcontext(stream) as chunks:
            async for _ in chunks:
                started.set()
                await asyncio.sleep(10)

    reader = asyncio.create_task(read())
    await started.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    return stream


async def test_cancelling_a_reader_aborts_synthesis() -> None:
    tts = EspeakTTS(piece_chars=1_000_000)
    await reader_cancelled_after_first_chunk(tts, close=True)
    start = time.perf_counter()
    assert seconds(await speak(tts, HELLO)) >= 1.0
    assert time.perf_counter() - start < 0.5


async def test_an_abandoned_stream_holds_espeak_for_one_piece_at_most() -> None:
    tts = EspeakTTS()
    # The reader never closes its stream, and the stream stays referenced (not finalised).
    stream = await reader_cancelled_after_first_chunk(tts, close=False)
    start = time.perf_counter()
    assert seconds(await speak(tts, HELLO)) >= 1.0
    assert time.perf_counter() - start < 0.5
    await stream.aclose()


async def test_concurrent_syntheses_are_serialised_without_crosstalk() -> None:
    # Small pieces make the two syntheses take turns on the espeak thread.
    tts = EspeakTTS(piece_chars=40)
    alone_high = await speak(tts, PARAGRAPH, voice="shimmer")
    alone_low = await speak(tts, HELLO, voice="cedar")
    high, low = await asyncio.gather(
        speak(tts, PARAGRAPH, voice="shimmer"), speak(tts, HELLO, voice="cedar")
    )
    # Crosstalk would show as the other voice's rate or pitch (shimmer is 2.5x cedar's pitch);
    # the margins only absorb espeak's own randomness (breath noise).
    assert seconds(high) == pytest.approx(seconds(alone_high), rel=0.03)
    assert seconds(low) == pytest.approx(seconds(alone_low), rel=0.03)
    assert median_pitch_hz(high) == pytest.approx(median_pitch_hz(alone_high), rel=0.15)
    assert median_pitch_hz(low) == pytest.approx(median_pitch_hz(alone_low), rel=0.15)


async def test_closing_the_engine_ends_its_streams_with_an_error() -> None:
    tts = EspeakTTS(piece_chars=40)
    async with aclosing(tts.synthesize(PARAGRAPH, voice="alloy")) as chunks:
        await anext(chunks)
        await tts.aclose()
        with pytest.raises(EngineError, match="closed"):
            async for _ in chunks:
                pass
    with pytest.raises(EngineError, match="closed"):
        await speak(tts, HELLO)
    await tts.aclose()  # idempotent


async def test_missing_library_is_reported_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh espeak thread with nothing loaded, in a process without espeakng-loader.
    monkeypatch.setattr(espeak, "_THREAD", espeak._EspeakThread())
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    tts = EspeakTTS()
    with pytest.raises(EngineUnavailable, match="pip install espeakng-loader") as info:
        await tts.warm_up()
    assert info.value.origin == "tts" and not info.value.retryable
    with pytest.raises(EngineUnavailable):
        await speak(tts, HELLO)


def test_unloadable_library_is_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="cannot load espeak-ng"):
        espeak._Library.open("/nonexistent/libespeak-ng.so", "/nonexistent")


# --- text pieces and voice settings ------------------------------------------------------


def test_text_is_cut_at_sentences_then_clauses_then_words() -> None:
    assert split_text("Hi there. How are you?\n\nFine!", 300) == ["Hi there. How are you? Fine!"]
    assert split_text("Hi there. How are you? Fine!", 15) == ["Hi there.", "How are you?", "Fine!"]
    assert split_text("Pi is 3.14 roughly.", 300) == ["Pi is 3.14 roughly."]
    words = " ".join(f"word{i}," if i % 7 == 0 else f"word{i}" for i in range(500))
    pieces = split_text(words, 60)
    assert max(len(p) for p in pieces) <= 60
    assert " ".join(pieces).split() == words.split()


def test_voice_resolution() -> None:
    assert resolve_voice("Shimmer") == OPENAI_VOICES["shimmer"]
    assert resolve_voice("fr+m2").name == "fr+m2"
    assert len(set(OPENAI_VOICES.values())) == len(OPENAI_VOICES) == 10
    # espeak's floor is 80 words per minute; the API's slowest speeds all land on it.
    assert speaking_rate(OPENAI_VOICES["alloy"], 0.25) == 80
    assert speaking_rate(OPENAI_VOICES["alloy"], 1.5) == round(1.5 * OPENAI_VOICES["alloy"].rate)
