"""Noise suppression for input audio (``audio.input.noise_reduction``): WebRTC's audio
processing module, as the ``webrtc-noise-gain`` wheel ships it.

It works on 16 kHz PCM16 in 10 ms frames; the stream object keeps the part of a frame that
has not arrived yet (at most 10 ms of delay). ``near_field`` (headsets) suppresses noise;
``far_field`` (laptop and room microphones, quieter and further away) also applies automatic
gain. ``strength`` 0–1 picks the suppression level (WebRTC's 0–4: off, low … very high).
"""

from __future__ import annotations

from typing import Literal

from webrtc_noise_gain import AudioProcessor

RATE = 16000
FRAME_BYTES = 2 * RATE // 100  # 10 ms of PCM16
# Target level of the automatic gain for far-field microphones, in dB below full scale.
FAR_FIELD_GAIN_DBFS = 3

NoiseKind = Literal["near_field", "far_field"]


def suppression_level(strength: float) -> int:
    """WebRTC's suppression level (0 off … 4 very high) for a strength of 0–1."""
    return min(4, max(0, round(strength * 4)))


class NoiseSuppressor:
    """One stream of 16 kHz PCM16 in, the same length of cleaned PCM16 out (delayed by
    the incomplete 10 ms frame it holds back)."""

    def __init__(self, kind: NoiseKind, strength: float = 1.0, sample_rate: int = RATE) -> None:
        if sample_rate != RATE:
            raise ValueError(f"the noise suppressor works at {RATE} Hz, not {sample_rate}")
        self.kind = kind
        self.strength = strength
        gain = FAR_FIELD_GAIN_DBFS if kind == "far_field" else 0
        self._processor = AudioProcessor(gain, suppression_level(strength))
        self._pending = bytearray()

    def process(self, pcm: bytes) -> bytes:
        """Clean every complete 10 ms frame; the rest waits for more audio."""
        self._pending += pcm
        whole = len(self._pending) - len(self._pending) % FRAME_BYTES
        out = b"".join(
            self._processor.Process10ms(bytes(self._pending[i : i + FRAME_BYTES])).audio
            for i in range(0, whole, FRAME_BYTES)
        )
        del self._pending[:whole]
        return out

    def flush(self) -> bytes:
        """The end of the stream: the last partial frame, padded with silence to be
        cleaned, then cut back to its length."""
        if not self._pending:
            return b""
        size = len(self._pending)
        frame = bytes(self._pending) + bytes(FRAME_BYTES - size)
        self._pending.clear()
        return bytes(self._processor.Process10ms(frame).audio[:size])
