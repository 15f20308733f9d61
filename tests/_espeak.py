"""Test speech made with espeak-ng from the ``espeakng-loader`` wheel (no apt, no downloads).

espeak-ng carries state from one synthesis to the next (the same text comes out a little
different each time), which made recognition tests depend on what ran before them. So tests
speak through a private copy of the library that is loaded afresh for every utterance: the
same text always gives the same samples, whatever else the process synthesised. Loading takes
about 5 ms. espeak-ng's state is global, so synthesis is serialised behind one lock.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import shutil
import tempfile
import threading
from pathlib import Path

import espeakng_loader
import numpy as np
import soxr

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE parameter id
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()


@functools.cache
def _private_copy() -> str:
    """A copy of the library under another path, so that it is not the instance the server's
    own espeak engine uses, and so that closing it really unloads it."""
    folder = Path(tempfile.mkdtemp(prefix="voxgate-test-espeak-"))
    copy = folder / "libespeak-ng-test.so"
    shutil.copy(espeakng_loader.get_library_path(), copy)
    return str(copy)


@functools.cache
def speak(text: str, *, rate_wpm: int = 150, sample_rate: int = 16000) -> bytes:
    """PCM16 mono speech for ``text`` at ``sample_rate``, the same on every call."""
    chunks: list[bytes] = []

    def collect(wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        if n > 0:
            chunks.append(ctypes.string_at(wav, n * 2))
        return 0

    callback = _SYNTH_CALLBACK(collect)  # kept alive for the duration of Synth
    encoded = text.encode() + b"\0"
    data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
    with _lock:
        lib = ctypes.CDLL(_private_copy())
        try:
            native_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
            if native_rate <= 0:
                raise RuntimeError(f"espeak_Initialize failed: {native_rate}")
            if lib.espeak_SetVoiceByName(b"en-us") != 0:
                raise RuntimeError("espeak-ng has no en-us voice")
            lib.espeak_SetSynthCallback(callback)
            lib.espeak_SetParameter(_RATE, rate_wpm, 0)
            err = lib.espeak_Synth(encoded, len(encoded), 0, 0, 0, _CHARS_UTF8, None, None)
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)  # type: ignore[attr-defined]  # private but stable
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed: {err}")
    native = np.frombuffer(b"".join(chunks), dtype=np.int16)
    resampled = soxr.resample(native, native_rate, sample_rate)
    return np.asarray(resampled, dtype=np.int16).tobytes()


def silence(seconds: float, *, sample_rate: int = 16000) -> bytes:
    return bytes(2 * int(seconds * sample_rate))


def white_noise(seconds: float, *, dbfs: float, sample_rate: int = 16000, seed: int = 0) -> bytes:
    """Gaussian white noise whose RMS level is ``dbfs`` relative to full scale."""
    rms = 32767 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(seed).normal(0, rms, int(seconds * sample_rate))
    return np.clip(noise, -32768, 32767).astype(np.int16).tobytes()
