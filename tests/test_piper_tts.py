"""piper text to speech, on a tiny voice the tests build themselves.

No real piper voice can be downloaded here, so ``write_voice`` makes an ONNX model with
piper's inputs and output whose audio is a 440 Hz sine, ``SAMPLES_PER_ID`` x length_scale
samples per phoneme id, louder for higher speaker ids. Everything around it is real:
espeak-ng phonemisation, the id mapping, onnxruntime, the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from voxgate.engines.base import TTSEngine
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local import piper
from voxgate.engines.local.piper import PiperTTS, phoneme_ids, phonemize

SAMPLE_RATE = 16000
SAMPLES_PER_ID = 100
TONE_HZ = 440.0
# Enough of espeak's en-us IPA for English text; each symbol gets its own id.
_SYMBOLS = "abdefhijklmnoprstuvwzæðŋɐɑɔəɚɛɜɡɪɹɾʃʊʌʒʔˈˌːθᵻ .,;:!?"
ID_MAP = {"_": [0], "^": [1], "$": [2]} | {s: [3 + i] for i, s in enumerate(_SYMBOLS)}


def _constant(name: str, value: Any) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def tone_model(*, speakers: bool = False) -> onnx.ModelProto:
    """A model with piper's interface whose output length follows input_lengths and
    scales[1] (length_scale), and whose loudness follows sid."""
    f32, i64 = np.float32, np.int64
    nodes = [
        _constant("per_id", np.array([SAMPLES_PER_ID], f32)),
        _constant("index_1", np.array(1, i64)),
        _constant("zero", np.array(0, i64)),
        _constant("one", np.array(1, i64)),
        _constant("omega", np.array([2 * math.pi * TONE_HZ / SAMPLE_RATE], f32)),
        _constant("quarter", np.array([0.25], f32)),
        _constant("out_shape", np.array([1, 1, 1, -1], i64)),
        helper.make_node("Cast", ["input_lengths"], ["n"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["scales", "index_1"], ["length_scale"]),
        helper.make_node("Mul", ["n", "per_id"], ["base"]),
        helper.make_node("Mul", ["base", "length_scale"], ["count_f"]),
        helper.make_node("Cast", ["count_f"], ["count_1"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["count_1"], ["count"]),
        helper.make_node("Range", ["zero", "count", "one"], ["t"]),
        helper.make_node("Cast", ["t"], ["t_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t_f", "omega"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    if speakers:  # amplitude 0.25 * (sid + 1)
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
        nodes += [
            _constant("one_f", np.array([1.0], f32)),
            helper.make_node("Cast", ["sid"], ["sid_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["sid_f", "one_f"], ["level"]),
            helper.make_node("Mul", ["level", "quarter"], ["amplitude"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["quarter"], ["amplitude"]))
    nodes += [
        helper.make_node("Mul", ["wave", "amplitude"], ["audio"]),
        helper.make_node("Reshape", ["audio", "out_shape"], ["output"]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1, "samples"])
    return make_model(helper.make_graph(nodes, "tone-voice", inputs, [output]))


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # The onnx package writes the newest IR version, which onnxruntime may not read yet.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def voice_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "audio": {"sample_rate": SAMPLE_RATE},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": ID_MAP,
    }
    return config | changes


def write_voice(
    folder: Path, *, speakers: bool = False, config: dict[str, Any] | None = None
) -> Path:
    """A piper voice (model + config) in ``folder``; returns the .onnx path."""
    path = folder / "tone-voice.onnx"
    onnx.save(tone_model(speakers=speakers), path)
    (folder / "tone-voice.onnx.json").write_text(json.dumps(config or voice_config()))
    return path


async def speak(engine: PiperTTS, text: str, **options: Any) -> np.ndarray:
    chunks = [
        c async for c in engine.synthesize(text, voice=options.pop("voice", "alloy"), **options)
    ]
    return np.frombuffer(b"".join(chunks), dtype="<i2")


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    engine = await PiperTTS.load(write_voice(tmp_path))
    yield engine
    await engine.aclose()


# ---------------------------------------------------------------------------------------------
# Speech
# ---------------------------------------------------------------------------------------------


async def test_speaks_at_the_voice_rate(engine: PiperTTS) -> None:
    assert isinstance(engine, TTSEngine)
    assert engine.sample_rate == SAMPLE_RATE
    audio = await speak(engine, "Hello there.")
    assert audio.size > 0
    # The tone comes out at its own pitch: no resampling to some other rate on the way.
    crossings = np.count_nonzero(np.diff(np.signbit(audio)))
    assert crossings / 2 / (audio.size / SAMPLE_RATE) == pytest.approx(TONE_HZ, rel=0.02)
    assert np.abs(audio).max() == pytest.approx(0.25 * 32767, rel=0.01)


async def test_longer_text_longer_audio(engine: PiperTTS) -> None:
    short = await speak(engine, "Hi.")
    long = await speak(engine, "Hello there, how are you doing on this fine morning?")
    assert long.size > 4 * short.size
    # Punctuation-only or empty text says nothing rather than failing.
    assert (await speak(engine, "")).size == 0


async def test_speed_scales_length(engine: PiperTTS) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    normal = await speak(engine, text)
    fast = await speak(engine, text, speed=1.5)
    slow = await speak(engine, text, speed=0.5)
    assert fast.size / normal.size == pytest.approx(1 / 1.5, rel=0.01)
    assert slow.size / normal.size == pytest.approx(2.0, rel=0.01)
    with pytest.raises(ValueError, match="speed"):
        await speak(engine, text, speed=3.0)


async def test_config_length_scale_is_used(tmp_path: Path) -> None:
    inference = {"noise_scale": 0.5, "length_scale": 2.0, "noise_w": 0.5}
    slow_voice = await PiperTTS.load(
        write_voice(tmp_path, config=voice_config(inference=inference))
    )
    (tmp_path / "normal").mkdir()
    normal_voice = await PiperTTS.load(write_voice(tmp_path / "normal"))
    text = "Good morning."
    ratio = (await speak(slow_voice, text)).size / (await speak(normal_voice, text)).size
    assert ratio == pytest.approx(2.0, rel=0.01)


async def test_speakers_by_name_and_by_openai_voice(tmp_path: Path) -> None:
    config = voice_config(num_speakers=2, speaker_id_map={"amy": 0, "bob": 1})
    engine = await PiperTTS.load(write_voice(tmp_path, speakers=True, config=config))

    async def peak(voice: str) -> float:
        return float(np.abs(await speak(engine, "Hello.", voice=voice)).max()) / 32767

    assert await peak("amy") == pytest.approx(0.25, rel=0.01)
    assert await peak("bob") == pytest.approx(0.5, rel=0.01)
    # OpenAI names map to fixed, different speakers; unknown names to the first one.
    assert await peak("alloy") != await peak("ash")
    assert await peak("no-such-speaker") == pytest.approx(0.25, rel=0.01)


async def test_pieces_are_synthesised_one_at_a_time_and_closing_stops(
    engine: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    real_run = piper._run_model

    def counting_run(*args: Any) -> bytes:
        runs.append(1)
        return real_run(*args)

    monkeypatch.setattr(piper, "_run_model", counting_run)
    sentence = "This sentence is long enough that two of them do not fit in one piece of text."
    text = " ".join([sentence] * 4)

    await speak(engine, text)
    assert len(runs) == 4  # one model run per piece

    runs.clear()
    stream = engine.synthesize(text, voice="alloy")
    await anext(stream)
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert len(runs) == 1


class StoppableRun:
    """Stands in for a long model run: works until its RunOptions says terminate, as
    onnxruntime does, and records that it was told to stop."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.stopped = threading.Event()

    def __call__(self, *args: Any) -> bytes:
        run = args[-1]
        self.running.set()
        deadline = time.monotonic() + 10
        while not run.terminate and time.monotonic() < deadline:
            time.sleep(0.005)
        if run.terminate:
            self.stopped.set()
        raise RuntimeError("Exiting due to terminate flag being set to true.")


async def test_cancelled_reader_stops_the_model_run(
    engine: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_run = StoppableRun()
    monkeypatch.setattr(piper, "_run_model", model_run)
    reader = asyncio.create_task(speak(engine, "Hello there."))
    assert await asyncio.to_thread(model_run.running.wait, 5)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert await asyncio.to_thread(model_run.stopped.wait, 5)


async def test_closing_the_engine_stops_synthesis_in_progress(
    engine: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_run = StoppableRun()
    monkeypatch.setattr(piper, "_run_model", model_run)
    reader = asyncio.create_task(speak(engine, "Hello there."))
    assert await asyncio.to_thread(model_run.running.wait, 5)
    await engine.aclose()
    with pytest.raises(EngineError, match="closed"):
        await reader
    assert model_run.stopped.is_set()


async def test_closed_engine_refuses(engine: PiperTTS) -> None:
    await engine.aclose()
    with pytest.raises(EngineError, match="closed"):
        await speak(engine, "Hello.")


# ---------------------------------------------------------------------------------------------
# Phonemes
# ---------------------------------------------------------------------------------------------


async def test_phonemes_keep_clause_punctuation() -> None:
    phonemes = await phonemize("Hello world, how are you?", "en-us")
    assert "həlˈoʊ" in phonemes
    assert "," in phonemes and phonemes.endswith("?")


def test_phoneme_ids_follow_piper_convention() -> None:
    id_map = {"_": [0], "^": [1], "$": [2], "a": [5], "b": [6, 7], "c": [8], "\u0327": [9]}
    # Start, pad, each known phoneme followed by pad, end; "x" has no id and is left out.
    assert phoneme_ids("abx", id_map) == [1, 0, 5, 0, 6, 7, 0, 2]
    # Precomposed "ç" is decomposed into "c" and a combining cedilla.
    assert phoneme_ids("ç", id_map) == [1, 0, 8, 0, 9, 0, 2]


# ---------------------------------------------------------------------------------------------
# A voice that cannot be used says why at start-up
# ---------------------------------------------------------------------------------------------


async def expect_unavailable(path: Path, *fragments: str) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        await PiperTTS.load(path)
    message = caught.value.message
    for fragment in fragments:
        assert fragment in message, message
    assert ".onnx.json" in message  # says what a piper voice consists of
    assert caught.value.origin == "tts"


async def test_missing_voice_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.onnx"
    await expect_unavailable(path, str(path), "does not exist")


async def test_missing_config(tmp_path: Path) -> None:
    path = write_voice(tmp_path)
    piper.config_path(path).unlink()
    await expect_unavailable(path, f"{path}.json", "does not exist")


@pytest.mark.parametrize(
    ("config_text", "fragment"),
    [
        ("{not json", "not readable JSON"),
        (json.dumps({"audio": {"sample_rate": 22050}}), "phoneme_id_map"),
        (json.dumps(voice_config(audio={"sample_rate": "fast"})), "audio.sample_rate"),
        (json.dumps(voice_config(phoneme_id_map={"a": [3]})), "lacks ^ $ _"),
        (json.dumps(voice_config(phoneme_type="text")), "phoneme_type 'text'"),
    ],
)
async def test_invalid_config(tmp_path: Path, config_text: str, fragment: str) -> None:
    path = write_voice(tmp_path)
    piper.config_path(path).write_text(config_text)
    await expect_unavailable(path, f"{path}.json", fragment)


async def test_model_that_is_not_onnx(tmp_path: Path) -> None:
    path = write_voice(tmp_path)
    path.write_bytes(b"this is not a model")
    await expect_unavailable(path, str(path), "cannot load piper voice model")


async def test_onnx_model_that_is_not_a_piper_voice(tmp_path: Path) -> None:
    path = write_voice(tmp_path)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "not-a-voice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(make_model(graph), path)
    await expect_unavailable(path, str(path), "not a piper voice model", "input_lengths")


async def test_espeak_voice_that_does_not_exist(tmp_path: Path) -> None:
    path = write_voice(tmp_path, config=voice_config(espeak={"voice": "xx-no-such-voice"}))
    await expect_unavailable(path, f"{path}.json", "'xx-no-such-voice'")
