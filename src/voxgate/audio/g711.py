"""G.711 µ-law and A-law (ITU-T G.711), as lookup tables over numpy arrays.

The tables reproduce the ITU-T G.191 reference implementation bit for bit: 16-bit linear PCM
in, 8-bit codes out. Decoding indexes a 256-entry table; encoding indexes a 65536-entry table by
the sample's bit pattern, so both directions are one vectorised gather (~10 µs per second of
audio).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_PCM16 = np.dtype("<i2")
# Every int16 value, in the order of its bit pattern read as uint16: the encoders' index.
_ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype("<u2").view(_PCM16).astype(np.int32)
_ALL_CODES = np.arange(256, dtype=np.int32)

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~_ALL_CODES & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _ULAW_BIAS) << exponent
    return np.where(u & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype(_PCM16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    s = _ALL_SAMPLES
    # G.711 takes the one's complement of negative samples (as the ITU-T G.191 reference
    # code does), so -1 and 0 both land on a zero code and -32768 needs no special case.
    magnitude = np.minimum(np.where(s < 0, ~s, s), _ULAW_CLIP) + _ULAW_BIAS
    # The segment is the position of the highest set bit above bit 7 (frexp's exponent is the
    # bit length); magnitude < 2**15, so it stays within 0..7.
    exponent = np.clip(np.frexp(magnitude.astype(np.float64))[1] - 8, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    sign = np.where(s < 0, 0x80, 0x00)
    return np.asarray(~(sign | (exponent << 4) | mantissa) & 0xFF, dtype=np.uint8)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = _ALL_CODES ^ 0x55
    segment = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(segment == 0, t + 8, (t + 0x108) << np.maximum(segment - 1, 0))
    return np.where(a & 0x80, t, -t).astype(_PCM16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    v = _ALL_SAMPLES >> 3
    negative = v < 0
    v = np.where(negative, -v - 1, v)
    mask = np.where(negative, 0x55, 0xD5)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, v, side="left")
    mantissa = np.where(segment < 2, v >> 1, v >> segment) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


_ULAW_DECODE = _ulaw_decode_table()
_ULAW_ENCODE = _ulaw_encode_table()
_ALAW_DECODE = _alaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """µ-law codes to PCM16 little-endian, one sample per byte."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """PCM16 little-endian (even length) to µ-law codes."""
    return _encode(_ULAW_ENCODE, pcm)


def alaw_to_pcm16(data: bytes) -> bytes:
    """A-law codes to PCM16 little-endian, one sample per byte."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """PCM16 little-endian (even length) to A-law codes."""
    return _encode(_ALAW_ENCODE, pcm)


def _encode(table: npt.NDArray[np.uint8], pcm: bytes) -> bytes:
    # Read samples as unsigned bit patterns: that is how the encode tables are indexed.
    patterns: npt.NDArray[np.uint16] = np.frombuffer(pcm, dtype="<u2")
    return table[patterns].tobytes()
