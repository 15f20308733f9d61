"""The input audio buffer of one session: what `input_audio_buffer.append` and a media
track add, and what a commit or a detected turn takes out. Sans-IO, like the connection
that owns it; times are session times in milliseconds from the first appended sample."""

from __future__ import annotations

import base64
import binascii

from .audio_math import bytes_to_ms, ms_to_bytes
from .errors import ProtocolError

MAX_APPEND_BYTES = 15 * 1024 * 1024
MIN_COMMIT_MS = 100


def check_append_size(audio: str) -> None:
    """Refuse an ``input_audio_buffer.append`` whose base64 audio is over the limit (the
    relay checks it too, before forwarding)."""
    if len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
        raise ProtocolError(
            f"Audio chunk too large: at most {MAX_APPEND_BYTES // (1024 * 1024)} MiB of audio "
            "per input_audio_buffer.append; split it into smaller appends.",
            code="input_audio_buffer_append_too_large",
            param="audio",
        )


class InputAudioBuffer:
    def __init__(self, max_bytes: int) -> None:
        self.data = bytearray()
        self.max_bytes = max_bytes
        # Total audio appended this session, for audio_start_ms / audio_end_ms.
        self.total_ms = 0.0

    def append_encoded(self, audio: str, fmt: str) -> bytes:
        """A client's base64 chunk; refused whole when it is invalid or does not fit."""
        check_append_size(audio)
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                "Invalid 'audio': expected base64-encoded audio in the session's input format.",
                param="audio",
            ) from None
        if len(self.data) + len(data) > self.max_bytes:
            raise ProtocolError(
                "The input audio buffer is full: commit or clear it before appending more "
                f"(limit {bytes_to_ms(fmt, self.max_bytes) / 1000:.0f} s).",
                code="input_audio_buffer_full",
                param="audio",
            )
        self._add(data, fmt)
        return data

    def append_track(self, data: bytes, fmt: str) -> None:
        """Audio from a media track (WebRTC, SIP). A full buffer drops its oldest audio: a
        live microphone cannot be told to stop, and only the recent audio can form a turn."""
        overflow = len(self.data) + len(data) - self.max_bytes
        if overflow > 0:
            del self.data[: min(overflow, len(self.data))]
        self._add(data, fmt)

    def _add(self, data: bytes, fmt: str) -> None:
        self.data.extend(data)
        self.total_ms += bytes_to_ms(fmt, len(data))

    def take_all(self, fmt: str) -> bytes:
        """Everything buffered (a client's commit), which must be at least MIN_COMMIT_MS."""
        ms = bytes_to_ms(fmt, len(self.data))
        if ms < MIN_COMMIT_MS:
            raise ProtocolError(
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        audio = bytes(self.data)
        self.data.clear()
        return audio

    def take_span(self, start_ms: float, end_ms: float, fmt: str) -> bytes:
        """The audio between two session times (a detected turn). What came before
        ``start_ms`` is dropped; what came after ``end_ms`` stays for the next turn."""
        buffer_start_ms = self.total_ms - bytes_to_ms(fmt, len(self.data))
        head = min(len(self.data), ms_to_bytes(fmt, max(0.0, start_ms - buffer_start_ms)))
        tail = min(len(self.data), ms_to_bytes(fmt, max(0.0, end_ms - buffer_start_ms)))
        audio = bytes(self.data[head:tail])
        del self.data[:tail]
        return audio
