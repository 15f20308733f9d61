"""Streaming conversion between engine PCM16 and the session's wire formats.

``OutputConverter`` turns engine audio (PCM16 at the engine's rate) into the bytes of the
session's output format; ``InputConverter`` turns client audio into PCM16 at an engine's rate.
Both keep state across chunks (resampler filter, half samples), so create one per stream.
"""

from __future__ import annotations

from collections.abc import Callable

from .formats import AudioFormat
from .g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from .resample import Resampler


def decode_to_pcm16(fmt: AudioFormat, data: bytes) -> bytes:
    """Audio in ``fmt`` to PCM16 little-endian at ``fmt.rate`` (no resampling)."""
    return _DECODERS[fmt.type](data)


def encode_from_pcm16(fmt: AudioFormat, pcm: bytes) -> bytes:
    """PCM16 little-endian at ``fmt.rate`` (even length) to audio in ``fmt``."""
    return _ENCODERS[fmt.type](pcm)


class OutputConverter:
    """Engine PCM16 at ``src_rate`` → ``fmt`` (resample, then encode), chunk by chunk."""

    def __init__(self, src_rate: int, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = Resampler(src_rate, fmt.rate)

    def process(self, pcm: bytes) -> bytes:
        return encode_from_pcm16(self.format, self._resampler.process(pcm))

    def flush(self) -> bytes:
        """End of stream: the resampler's tail, encoded. The converter can then be reused."""
        return encode_from_pcm16(self.format, self._resampler.flush())


class InputConverter:
    """``fmt`` → PCM16 at ``dst_rate`` (decode, then resample), chunk by chunk."""

    def __init__(self, fmt: AudioFormat, dst_rate: int) -> None:
        self.format = fmt
        self._resampler = Resampler(fmt.rate, dst_rate)

    def process(self, data: bytes) -> bytes:
        # PCM16 input may be split mid-sample; the resampler keeps the odd byte. G.711 has
        # one byte per sample, so its decoded output is always whole.
        return self._resampler.process(decode_to_pcm16(self.format, data))

    def flush(self) -> bytes:
        """End of stream: the resampler's tail. The converter can then be reused."""
        return self._resampler.flush()


class FormatConverter:
    """Audio in ``src`` → audio in ``dst`` (decode, resample, encode), chunk by chunk. The
    same format both ways passes through untouched (G.711 in, the same G.711 out)."""

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self._same = src == dst
        self._decoder = InputConverter(src, dst.rate)

    def process(self, data: bytes) -> bytes:
        if self._same:
            return data
        return encode_from_pcm16(self.dst, self._decoder.process(data))


def _identity(data: bytes) -> bytes:
    return data


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "audio/pcm": _identity,
    "audio/pcmu": ulaw_to_pcm16,
    "audio/pcma": alaw_to_pcm16,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "audio/pcm": _identity,
    "audio/pcmu": pcm16_to_ulaw,
    "audio/pcma": pcm16_to_alaw,
}
