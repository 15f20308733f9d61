"""The three audio formats of the Realtime API and the ms ↔ bytes arithmetic on them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A mono audio format as named on the wire (``{"type": "audio/pcmu"}``).

    ``audio/pcm`` is 16-bit signed little-endian PCM at 24 kHz; ``audio/pcmu`` and
    ``audio/pcma`` are G.711 µ-law and A-law at 8 kHz, one byte per sample.
    """

    type: FormatType
    rate: int
    bytes_per_sample: int

    @classmethod
    def from_type(cls, type_: str) -> AudioFormat:
        """The format for a protocol format type string; ``ValueError`` for any other."""
        try:
            return _BY_TYPE[type_]
        except KeyError:
            expected = ", ".join(repr(t) for t in _BY_TYPE)
            message = f"unknown audio format {type_!r}; expected one of {expected}"
            raise ValueError(message) from None

    @property
    def is_pcm16(self) -> bool:
        return self.type == "audio/pcm"

    def bytes_to_ms(self, n_bytes: int) -> float:
        """Duration in milliseconds of ``n_bytes`` of audio (partial samples count pro rata)."""
        return n_bytes * 1000 / (self.rate * self.bytes_per_sample)

    def ms_to_bytes(self, ms: float) -> int:
        """Bytes in ``ms`` milliseconds, rounded down to a whole number of samples."""
        # The epsilon keeps float error (e.g. 0.1 * 3 ms) from losing a whole sample.
        samples = math.floor(ms * self.rate / 1000 + 1e-6)
        return max(samples, 0) * self.bytes_per_sample


PCM16 = AudioFormat("audio/pcm", 24000, 2)
PCMU = AudioFormat("audio/pcmu", 8000, 1)
PCMA = AudioFormat("audio/pcma", 8000, 1)

_BY_TYPE: dict[str, AudioFormat] = {f.type: f for f in (PCM16, PCMU, PCMA)}
