"""Byte ↔ millisecond arithmetic of the three wire formats (PROTOCOL.md §6.2). Clients compute
played duration with exactly these rates, so ``audio_end_ms`` math must match them."""

from __future__ import annotations

_BYTES_PER_MS = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}
_SAMPLE_BYTES = {"audio/pcm": 2, "audio/pcmu": 1, "audio/pcma": 1}


def bytes_to_ms(format_type: str, n_bytes: int) -> float:
    return n_bytes / _BYTES_PER_MS[format_type]


def ms_to_bytes(format_type: str, ms: float) -> int:
    """Whole samples only, so a cut never splits a PCM16 sample."""
    width = _SAMPLE_BYTES[format_type]
    return int(ms * _BYTES_PER_MS[format_type]) // width * width
