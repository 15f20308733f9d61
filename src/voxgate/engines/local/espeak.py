"""The embedded text-to-speech engine: espeak-ng through ctypes.

The library and its data ship inside the ``espeakng-loader`` wheel, so it works offline with
nothing but pip. espeak-ng keeps global state and is not thread-safe, so every call into it
runs on one dedicated thread per process (the "espeak thread"); that thread is also the lock:
syntheses from all sessions queue on it and run one at a time. That costs little, since
espeak speaks ~1000x faster than real time.

Audio streams back through espeak's synchronous-mode callback, which hands each chunk to the
event loop (``call_soon_threadsafe``) as soon as it exists. Returning 1 from the callback makes
espeak stop at once; that is how closing the iterator aborts a synthesis.

Buffering: a text is spoken in pieces of at most ``piece_chars`` characters (a few sentences),
and a piece is queued only once the reader has taken all the audio of the one before. Audio
waiting for the reader is therefore bounded by one piece (~20 s of audio at the default), and
a slow reader never holds the espeak thread, which would stall every other session's speech.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ..errors import EngineError, EngineUnavailable
from .voices import DEFAULT_VOICE, EspeakVoice, resolve_voice, speaking_rate

_log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_CHARS_UTF8 = 0x1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_EE_OK = 0
_BUFFER_MS = 60  # audio per callback; espeak's own default

_SAMPLE_RATE = 22050
_INSTALL_HINT = (
    "install the 'espeakng-loader' package (pip install espeakng-loader), which ships "
    "libespeak-ng and its voice data"
)

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
# Takes one chunk of PCM16; returns False when nobody wants more (abort the synthesis).
Sink = Callable[[bytes], bool]


class _Library:
    """espeak-ng, loaded and initialised. Use only on the espeak thread."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._sink: Sink | None = None
        self._missing_voices: set[str] = set()
        # Referenced for the life of the library: C keeps only the bare function pointer.
        self._callback = _SynthCallback(self._on_audio)

    @property
    def cdll(self) -> ctypes.CDLL:
        return self._lib

    @classmethod
    def open(cls, library_path: str, data_path: str) -> _Library:
        """Load the shared library at ``library_path`` and initialise it with the voice data
        in ``data_path``; ``EngineUnavailable`` if either is unusable."""
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise EngineUnavailable(
                f"cannot load espeak-ng from {library_path} ({exc}); {_INSTALL_HINT}",
                origin="tts",
            ) from exc
        _declare_signatures(lib)
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate != _SAMPLE_RATE:
            raise EngineUnavailable(
                f"espeak-ng failed to initialise with data at {data_path} (returned {rate}); "
                f"{_INSTALL_HINT}",
                origin="tts",
            )
        return cls(lib)

    def speak(
        self, text: str, voice: EspeakVoice, speed: float, sink: Sink, *, end_pause: bool
    ) -> None:
        """Synthesise ``text``, passing PCM16 chunks to ``sink`` until done or it says stop."""
        # Other code in the process (phonemisers, test helpers) may use the same library:
        # install our callback every time, and leave the parameters as we found them.
        self._lib.espeak_SetSynthCallback(self._callback)
        saved = {p: self._lib.espeak_GetParameter(p, 1) for p in (_RATE, _PITCH, _RANGE)}
        self._select(voice, speed)
        data = text.encode("utf-8") + b"\0"
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        self._sink = sink
        try:
            status = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, flags, None, None
            )
        finally:
            self._sink = None
            for parameter, value in saved.items():
                self._lib.espeak_SetParameter(parameter, value, 0)
        if status != _EE_OK:
            raise EngineError(f"espeak_Synth failed with status {status}", origin="tts")

    def _select(self, voice: EspeakVoice, speed: float) -> None:
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
            if voice.name not in self._missing_voices:
                self._missing_voices.add(voice.name)
                _log.warning("espeak-ng has no voice %r; using %r", voice.name, DEFAULT_VOICE.name)
            voice = DEFAULT_VOICE
            self._lib.espeak_SetVoiceByName(voice.name.encode())
        # Parameters are global and outlive a voice change, so all of them are set each time.
        self._lib.espeak_SetParameter(_RATE, speaking_rate(voice, speed), 0)
        self._lib.espeak_SetParameter(_PITCH, voice.pitch, 0)
        self._lib.espeak_SetParameter(_RANGE, voice.range, 0)

    def _on_audio(
        self, wav: ctypes._Pointer[ctypes.c_short], n_samples: int, _events: int | None
    ) -> int:
        # ctypes would print and swallow an exception raised here, and espeak would go on
        # speaking; any failure aborts the synthesis instead.
        try:
            if n_samples <= 0:
                return 0
            sink = self._sink
            return 0 if sink is not None and sink(ctypes.string_at(wav, n_samples * 2)) else 1
        except BaseException:
            _log.exception("espeak-ng audio callback failed")
            return 1


def _declare_signatures(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.espeak_GetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int


def _bundled_paths() -> tuple[str, str]:
    """The shared library and data directory inside the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EngineUnavailable(
            f"espeak-ng is not installed; {_INSTALL_HINT}", origin="tts"
        ) from exc
    try:
        return str(espeakng_loader.get_library_path()), str(espeakng_loader.get_data_path())
    except RuntimeError as exc:  # the wheel's data directory is missing
        raise EngineUnavailable(
            f"espeak-ng data is missing ({exc}); {_INSTALL_HINT}", origin="tts"
        ) from exc


class _EspeakThread:
    """The one thread per process that may call espeak-ng, and the library it loaded."""

    def __init__(self) -> None:
        self._executor = self._new_executor()
        self._library: _Library | None = None

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return self._executor.submit(fn, *args, **kwargs)

    def library(self) -> _Library:
        """The initialised library, loaded on first use. Call on the espeak thread only."""
        if self._library is None:
            self._library = _Library.open(*_bundled_paths())
        return self._library

    def after_fork(self) -> None:
        # A forked child inherits the executor's bookkeeping but not its thread: without a
        # fresh executor its first job would wait forever.
        self._executor = self._new_executor()

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxgate-espeak")


_THREAD = _EspeakThread()
os.register_at_fork(after_in_child=_THREAD.after_fork)


async def with_library(fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(lib, *args)`` on the espeak thread, ``lib`` being the loaded espeak-ng
    library (``ctypes.CDLL``). espeak-ng keeps global state and must be called from one
    thread only; this is how other engines (piper's phonemiser) use it safely."""
    return await asyncio.wrap_future(_THREAD.submit(lambda: fn(_THREAD.library().cdll, *args)))


class _Bridge:
    """Carries one synthesis's audio from the espeak thread to the coroutine reading it.

    ``push`` runs on the espeak thread, everything else on the event loop. Items are PCM
    chunks, ``None`` at the end of each piece of text, or the exception that ended it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[bytes | None | BaseException] = asyncio.Queue()
        self._stopped = False
        self._error: EngineError | None = None

    def push(self, item: bytes | None | BaseException) -> bool:
        """Queue ``item`` for the reader; False once the reader has gone (stop speaking)."""
        if self._stopped:
            return False
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody will ever read this
            return False
        return True

    async def get(self) -> bytes | None:
        """The next chunk, or None at the end of a piece; raises what ended the synthesis."""
        item = await self._items.get()
        if self._error is not None:
            raise self._error
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self, error: EngineError | None = None) -> None:
        """Abort: espeak stops at its next chunk; a reader gets ``error`` if one is given."""
        self._stopped = True
        if error is not None and self._error is None:
            self._error = error
            self._items.put_nowait(None)  # wake a waiting reader


def _speak_piece(text: str, voice: EspeakVoice, speed: float, bridge: _Bridge, last: bool) -> None:
    """Runs on the espeak thread: one piece of text into the bridge, then its end marker."""
    try:
        # A pause after every piece but the last keeps sentence rhythm across pieces without
        # delaying the end of the answer.
        _THREAD.library().speak(text, voice, speed, bridge.push, end_pause=not last)
    except EngineError as exc:
        bridge.push(exc)
    except Exception as exc:
        error = EngineError(f"espeak-ng failed: {exc!r}", origin="tts")
        error.__cause__ = exc
        bridge.push(error)
    else:
        bridge.push(None)


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+")


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, cut at sentence ends where
    possible, else at clause ends, else between words; a word over ``max_chars`` is cut.
    Empty when there is nothing to say."""
    pieces: list[str] = []
    current = ""
    for part in _parts(text, max_chars):
        if current and len(current) + 1 + len(part) > max_chars:
            pieces.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return pieces


def _parts(text: str, max_chars: int) -> Iterator[str]:
    """Sentences, with those over ``max_chars`` broken into clauses and then words."""
    for sentence in _split(_SENTENCE_BREAK, text):
        if len(sentence) <= max_chars:
            yield sentence
            continue
        for clause in _split(_CLAUSE_BREAK, sentence):
            yield from [clause] if len(clause) <= max_chars else _words(clause, max_chars)


def _words(text: str, max_chars: int) -> Iterator[str]:
    """Words, a word over ``max_chars`` cut into pieces of that size: one huge "word" must
    not hold the process's only espeak thread for seconds."""
    for word in text.split():
        yield from (word[i : i + max_chars] for i in range(0, len(word), max_chars))


def _split(pattern: re.Pattern[str], text: str) -> Iterator[str]:
    return filter(None, (s.strip() for s in pattern.split(text)))


class EspeakTTS:
    """Text to speech with the espeak-ng library from the ``espeakng-loader`` wheel.

    Implements ``TTSEngine``: PCM16 mono at 22050 Hz, first audio within a millisecond or two,
    ~1000x real time. ``voice`` is an OpenAI voice name (see ``voices.OPENAI_VOICES``) or an
    espeak-ng voice name such as ``"en-gb-x-rp"`` or ``"fr+m2"``; names espeak does not know fall
    back to the default voice. The library loads on first use (or in ``warm_up``); if it
    cannot, ``EngineUnavailable`` says what to install.
    """

    name = "espeak"
    sample_rate = _SAMPLE_RATE

    def __init__(self, *, piece_chars: int = 300) -> None:
        self._piece_chars = piece_chars
        self._bridges: set[_Bridge] = set()
        self._closed = False

    async def warm_up(self) -> None:
        """Load and initialise espeak-ng now, so the first synthesis does not pay for it."""
        await asyncio.wrap_future(_THREAD.submit(_THREAD.library))

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """Speak ``text``, yielding PCM16 chunks as espeak produces them.

        ``speed`` is 0.25–1.5 (``ValueError`` otherwise). Closing the iterator (``aclose``;
        read it inside ``contextlib.aclosing`` so that a cancelled reader closes it too) stops
        espeak at once. A stream dropped without closing holds espeak for one piece at most.
        """
        setting = resolve_voice(voice)
        speaking_rate(setting, speed)  # validate before any work is queued
        if self._closed:
            raise EngineError("the espeak engine is closed", origin="tts")
        pieces = split_text(text, self._piece_chars)
        bridge = _Bridge(asyncio.get_running_loop())
        self._bridges.add(bridge)
        job: Future[None] | None = None
        try:
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                job = _THREAD.submit(_speak_piece, piece, setting, speed, bridge, last)
                while (chunk := await bridge.get()) is not None:
                    yield chunk
        finally:
            bridge.stop()
            self._bridges.discard(bridge)
            if job is not None:
                job.cancel()  # drops it if still queued behind other syntheses

    async def aclose(self) -> None:
        """Stop this engine's syntheses (their readers get an ``EngineError``) and refuse new
        ones. espeak-ng itself stays loaded: it is shared by the whole process."""
        self._closed = True
        for bridge in list(self._bridges):
            bridge.stop(EngineError("the espeak engine was closed", origin="tts"))
