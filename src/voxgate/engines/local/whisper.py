"""Speech to text with faster-whisper (CTranslate2) on a model directory the user supplies.

Whisper decodes whole utterances, not streams: ``push`` only buffers audio, and ``finish``
transcribes everything at once. Loading the model and transcribing both hold a CPU for a long
time, so both run in threads (``asyncio.to_thread``), never on the event loop.

No weights ship with any wheel we depend on, and nothing may be downloaded at run time, so
the engine refuses anything but a complete local model directory: faster-whisper would
otherwise treat an unknown path as a Hugging Face model name and try to fetch it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from voxgate.engines.base import Transcript
from voxgate.engines.errors import EngineError, EngineUnavailable

SAMPLE_RATE = 16000  # what Whisper's feature extractor expects
# A model directory holds the CTranslate2 weights and the tokenizer; without the tokenizer
# faster-whisper downloads one from the Hugging Face Hub.
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_WHAT_TO_SUPPLY = (
    "supply a CTranslate2 conversion of a Whisper model: a directory with "
    f"{', '.join(_REQUIRED_FILES)}, such as a Systran/faster-whisper-* download or the output "
    "of `ct2-transformers-converter --model openai/whisper-base --output_dir DIR "
    "--copy_files tokenizer.json preprocessor_config.json`"
)


def _unavailable(message: str) -> EngineUnavailable:
    return EngineUnavailable(f"{message}; {_WHAT_TO_SUPPLY}", origin="stt")


def check_model_dir(path: Path) -> None:
    """Raise ``EngineUnavailable`` unless ``path`` looks like a faster-whisper model."""
    if not path.exists():
        raise _unavailable(f"faster-whisper model directory {path} does not exist")
    if not path.is_dir():
        raise _unavailable(f"faster-whisper model {path} is not a directory")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise _unavailable(f"faster-whisper model directory {path} lacks {', '.join(missing)}")


def _load(path: Path, device: str, compute_type: str, cpu_threads: int, parallel: int) -> Any:
    check_model_dir(path)
    # Imported here: it pulls in ctranslate2, PyAV and tokenizers, which a server running
    # the embedded engines never needs.
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]  # ships no types

    try:
        return WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=parallel,
        )
    except Exception as exc:  # ctranslate2 and tokenizers fail with assorted types
        raise _unavailable(f"cannot load faster-whisper model {path}: {exc}") from exc


def _transcribe(model: Any, pcm: bytes, language: str | None, prompt: str | None) -> str:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    # One utterance, already cut by the turn detector: no VAD filter. No conditioning on the
    # previous window either: without it the model is less prone to repetition loops, and
    # an utterance rarely spans more than one 30 s window anyway.
    segments, _info = model.transcribe(
        audio,
        language=language,
        initial_prompt=prompt,
        vad_filter=False,
        condition_on_previous_text=False,
    )
    # ``segments`` is lazy: the decoding happens while it is read, so read it here.
    return " ".join(segment.text.strip() for segment in segments).strip()


class WhisperStream:
    """One utterance (``STTStream``): audio is buffered until ``finish``."""

    def __init__(self, engine: WhisperEngine, language: str | None, prompt: str | None) -> None:
        self._engine = engine
        self._language = language
        self._prompt = prompt
        self._audio = bytearray()
        self._closed = False

    async def push(self, pcm: bytes) -> str | None:
        """Buffer audio. Whisper gives no partial hypotheses, so this always returns None."""
        if self._closed:
            raise RuntimeError("push on a speech-to-text stream that is already closed")
        if len(self._audio) + len(pcm) > self._engine.max_utterance_bytes:
            raise EngineError(
                f"utterance longer than {self._engine.max_utterance_s:g} s; "
                "faster-whisper transcribes at most that much at once",
                origin="stt",
            )
        self._audio += pcm
        return None

    async def finish(self) -> Transcript:
        """Transcribe the whole utterance."""
        if self._closed:
            raise RuntimeError("finish on a speech-to-text stream that is already closed")
        self._closed = True
        pcm = bytes(self._audio[: len(self._audio) - len(self._audio) % 2])
        self._audio.clear()
        text = await self._engine._transcribe(pcm, self._language, self._prompt) if pcm else ""
        return Transcript(text=text, audio_seconds=len(pcm) / 2 / SAMPLE_RATE)

    async def aclose(self) -> None:
        """Drop the buffered audio. Idempotent."""
        self._closed = True
        self._audio.clear()


class WhisperEngine:
    """faster-whisper speech to text (``STTEngine``) on a local model directory.

    Create it with ``await WhisperEngine.load(path)``: a missing or unusable model raises
    ``EngineUnavailable`` saying what to supply. Transcriptions run one at a time per engine
    (``parallel`` raises that, at the cost of memory); CTranslate2 already spreads one over
    ``cpu_threads``.
    """

    name = "faster-whisper"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: Any, *, parallel: int = 1, max_utterance_s: float = 300.0) -> None:
        self._model: Any = model
        self._slots = asyncio.Semaphore(parallel)
        self.max_utterance_s = max_utterance_s
        self.max_utterance_bytes = int(max_utterance_s * SAMPLE_RATE) * 2

    @classmethod
    async def load(
        cls,
        path: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        parallel: int = 1,
    ) -> WhisperEngine:
        """Load the model in ``path`` off the event loop. ``device`` and ``compute_type`` go
        to CTranslate2 ("cpu"/"cuda"; "int8", "float16", …); ``cpu_threads`` 0 is its
        default."""
        model = await asyncio.to_thread(_load, path, device, compute_type, cpu_threads, parallel)
        return cls(model, parallel=parallel)

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None
    ) -> WhisperStream:
        """A new utterance. ``language`` ("en", "fr-FR", …) skips language detection;
        ``prompt`` is Whisper's initial prompt (spellings, vocabulary, style)."""
        if self._model is None:
            raise EngineError("the faster-whisper engine is closed", origin="stt")
        code = language.lower().replace("_", "-").split("-")[0] if language else None
        if code and code != "en" and not self._model.model.is_multilingual:
            raise EngineError(
                f"this faster-whisper model is English-only, not {language!r}", origin="stt"
            )
        return WhisperStream(self, code, prompt)

    async def aclose(self) -> None:
        """Refuse new streams and let the model go once running transcriptions end."""
        self._model = None

    async def _transcribe(self, pcm: bytes, language: str | None, prompt: str | None) -> str:
        model = self._model
        if model is None:
            raise EngineError("the faster-whisper engine is closed", origin="stt")
        # Waiting for a slot here rather than in CTranslate2's queue keeps the default thread
        # pool free. CTranslate2 cannot be interrupted, so a decoding whose caller stopped
        # waiting still holds its slot (and its CPU) until it ends.
        await self._slots.acquire()
        decoding = asyncio.get_running_loop().run_in_executor(
            None, _transcribe, model, pcm, language, prompt
        )
        decoding.add_done_callback(self._decoding_done)
        try:
            return await asyncio.shield(decoding)
        except Exception as exc:  # ctranslate2 and tokenizers fail with assorted types
            raise EngineError(f"faster-whisper failed: {exc}", origin="stt") from exc

    def _decoding_done(self, decoding: asyncio.Future[str]) -> None:
        self._slots.release()
        if not decoding.cancelled():
            decoding.exception()  # marked as seen, even when nobody waits for it any more
