"""WAV files: the user's audio read in as wire-format PCM16, the reply's audio written out."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..audio import resample
from .options import WIRE_RATE, CallError

MAX_WAV_FILE_BYTES = 256 * 1024 * 1024


def read_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV file (any rate, any number of channels) as 24 kHz mono PCM16.

    The RIFF chunks are read here rather than with the ``wave`` module, which on Python 3.11
    rejects WAVE_FORMAT_EXTENSIBLE, the header many tools write even for plain 16-bit PCM.
    """
    try:
        if path.stat().st_size > MAX_WAV_FILE_BYTES:
            raise CallError(f"{path} is too large (over {MAX_WAV_FILE_BYTES >> 20} MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CallError(f"{path}: no such file") from None
    except OSError as exc:
        raise CallError(f"cannot read {path}: {exc.strerror or exc}") from None
    fmt, audio = _riff_chunks(data, path)
    channels, rate = _check_format(fmt, path)
    frame = 2 * channels
    audio = audio[: len(audio) // frame * frame]
    if not audio:
        raise CallError(f"{path} contains no audio")
    samples = np.frombuffer(audio, dtype="<i2").reshape(-1, channels)
    mono = samples.mean(axis=1).round().astype("<i2").tobytes() if channels > 1 else audio
    return resample(mono, rate, WIRE_RATE)


def _riff_chunks(data: bytes, path: Path) -> tuple[bytes, bytes]:
    """The ``fmt `` and ``data`` chunks of a RIFF/WAVE file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise CallError(f"{path} is not a WAV file (it has no RIFF/WAVE header)")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.setdefault(data[pos : pos + 4], data[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    if b"fmt " not in chunks or len(chunks[b"fmt "]) < 16:
        raise CallError(f"{path} is not a usable WAV file (no format chunk)")
    if b"data" not in chunks:
        raise CallError(f"{path} contains no audio (no data chunk)")
    return chunks[b"fmt "], chunks[b"data"]


_ENCODINGS = {3: "32-bit float", 6: "A-law", 7: "µ-law", 2: "ADPCM", 0x55: "MP3"}


def _check_format(fmt: bytes, path: Path) -> tuple[int, int]:
    """Channels and sample rate of a 16-bit PCM format chunk; CallError for anything else."""
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag follows
        tag = int.from_bytes(fmt[24:26], "little")
    convert = "convert it first, e.g. `sox in.wav -b 16 -e signed-integer out.wav`"
    if tag != 1:
        encoding = _ENCODINGS.get(tag, f"format tag {tag:#x}")
        raise CallError(f"{path} holds {encoding} audio; voxgate call plays 16-bit PCM ({convert})")
    if bits != 16:
        raise CallError(f"{path} has {bits}-bit samples; voxgate call plays 16-bit PCM ({convert})")
    if channels < 1 or rate < 1:
        raise CallError(f"{path} has a broken header ({channels} channels at {rate} Hz)")
    return channels, rate


def check_writable(path: Path) -> None:
    """Fail before the call, not after it, when the reply could not be saved."""
    if not path.parent.is_dir():
        raise CallError(f"cannot save the reply to {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise CallError(f"cannot save the reply to {path}: it is a folder")


def save_wav(path: Path, pcm: bytes, rate: int = WIRE_RATE) -> None:
    """Write mono PCM16 to ``path`` as a WAV file."""
    try:
        # Opened here, not by wave.open: on a failed open, wave's half-made writer raises
        # again from its destructor.
        with path.open("wb") as file, wave.open(file, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(pcm)
    except OSError as exc:
        raise CallError(f"cannot save the reply to {path}: {exc.strerror or exc}") from None
