"""A session's recording: the caller on the left channel, voxgate on the right, time-aligned.

Audio reaches the recorder as it flows: the caller's as it arrives (a media track's 20 ms
frames, or a client's appends), voxgate's as it is heard (what a server playout takes every
20 ms, silence included) or, over WebSocket, as it is sent. Each channel is placed on one
timeline, the session's clock: a chunk that arrives after a pause is put where it ends now (the
pause becomes silence); one that arrives early (appends faster than real time, a reply made
ahead of playback) follows straight on from the channel's previous audio.

The recorder holds at most a second or so of audio: every ``flush_s`` it writes both channels,
interleaved, up to ``slack_s`` before now (later audio for that stretch arrives too late and
simply follows on) to a `RecordingSink`, which the server backs with a WAV file.
"""

from __future__ import annotations

import base64
from typing import Protocol

import numpy as np

from ..audio import AudioFormat, FormatConverter
from ..protocol.connection import RealtimeConnection
from ..protocol.events import ResponseDelta
from .clock import Clock


class RecordingSink(Protocol):
    def write(self, frames: bytes) -> None:
        """Interleaved two-channel PCM16 frames (left, right)."""
        ...

    def close(self) -> None:
        """The recording is complete."""
        ...


class _Channel:
    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self.pending = bytearray()  # PCM16 not yet written
        self._converter: FormatConverter | None = None

    def add(self, audio: bytes, fmt: AudioFormat, written: int, now: int, slack: int) -> None:
        if self._converter is None or self._converter.src != fmt:
            self._converter = FormatConverter(fmt, self.format)
        pcm = self._converter.process(audio)
        start = now - len(pcm) // 2  # where a chunk arriving in real time began
        end = written + len(self.pending) // 2
        if end < start - slack:
            self.pad_to(start, written)
        self.pending += pcm

    def pad_to(self, position: int, written: int) -> None:
        missing = position - written - len(self.pending) // 2
        if missing > 0:
            self.pending += bytes(2 * missing)


class CallRecorder:
    def __init__(
        self,
        sink: RecordingSink,
        clock: Clock,
        rate: int,
        *,
        flush_s: float = 1.0,
        slack_s: float = 0.25,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.rate = rate
        fmt = AudioFormat("audio/pcm", rate, 2)
        self._caller, self._voxgate = _Channel(fmt), _Channel(fmt)
        self._start = clock.monotonic()
        self._written = 0  # samples per channel handed to the sink
        self._flushed_at = self._start
        self._flush_s, self._slack = flush_s, int(slack_s * rate)
        self.closed = False

    def caller(self, audio: bytes, fmt: AudioFormat) -> None:
        self._add(self._caller, audio, fmt)

    def voxgate(self, audio: bytes, fmt: AudioFormat) -> None:
        self._add(self._voxgate, audio, fmt)

    def sent(self, event: ResponseDelta, conn: RealtimeConnection) -> None:
        """Reply audio sent as an event (no server playout), in its response's format."""
        state = conn.responses.get(event.response_id)
        kind = state.plan.output_format if state else conn.config.audio.output.format.type
        self.voxgate(base64.b64decode(event.delta), AudioFormat.from_type(kind))

    def close(self) -> None:
        """Write what is left (both channels to the same length) and close the sink."""
        if self.closed:
            return
        self.closed = True
        length = max(len(self._caller.pending), len(self._voxgate.pending)) // 2
        self._write(self._written + length)
        self.sink.close()

    @property
    def seconds(self) -> float:
        return self._written / self.rate

    def _now(self) -> int:
        return int((self.clock.monotonic() - self._start) * self.rate)

    def _add(self, channel: _Channel, audio: bytes, fmt: AudioFormat) -> None:
        if self.closed or not audio:
            return
        channel.add(audio, fmt, self._written, self._now(), self._slack)
        if self.clock.monotonic() - self._flushed_at >= self._flush_s:
            self._flushed_at = self.clock.monotonic()
            self._write(self._now() - self._slack)

    def _write(self, upto: int) -> None:
        """Both channels up to ``upto`` (silence where one has nothing), then as much more as
        both have."""
        for channel in (self._caller, self._voxgate):
            channel.pad_to(upto, self._written)
        count = min(len(self._caller.pending), len(self._voxgate.pending)) // 2
        if count <= 0:
            return
        frames = np.empty((count, 2), dtype="<i2")
        frames[:, 0] = np.frombuffer(self._caller.pending, dtype="<i2", count=count)
        frames[:, 1] = np.frombuffer(self._voxgate.pending, dtype="<i2", count=count)
        del self._caller.pending[: 2 * count]
        del self._voxgate.pending[: 2 * count]
        self._written += count
        self.sink.write(frames.tobytes())
