"""The user's audio of a relayed session, kept per committed item, sans-IO.

A relayed session's upstream transcribes the user's turns only when the client turned input
transcription on; without it, the only record of what the user said is the audio itself.
`UserAudio` keeps that audio so a failover or renewal can still carry the user's words
(`carry.py`): the embedded pipeline transcribes it, a fresh upstream is given it as audio.

What it sees, in the order the upstream does:
- the audio the relay *writes* to the upstream link (client appends, a WebRTC microphone),
  with a client's ``input_audio_buffer.commit`` / ``clear`` at the point they were written;
- the upstream's ``speech_started`` / ``speech_stopped`` / ``timeout_triggered`` (an item's
  ``audio_start_ms`` / ``audio_end_ms``, counted from the first audio of that upstream
  session: `link_opened` marks where each session's count starts) and ``committed``.

Rules kept here:
- a committed item takes the span its speech events gave it, else (a client's commit) the
  audio written between the previous commit or clear and that commit, answered in order;
- the audio not yet committed is bounded: while turn detection is on and the user is not
  speaking, only the last `IDLE_KEEP_MS`; otherwise the last `PENDING_MAX_MS` (a longer turn
  keeps its end); both to within a second (audio is dropped in whole segments);
- the items' audio is bounded by ``max_bytes`` (the local conversation's budget): the oldest
  items' audio is dropped first, the newest item's never.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import events as ev
from .audio_math import bytes_to_ms, ms_to_bytes
from .input_buffer import MIN_COMMIT_MS
from .limits import ConnectionLimits

# Audio kept ahead of a turn while turn detection listens: the upstream reports speech some
# time after it began, and its turn starts earlier still (prefix padding).
IDLE_KEEP_MS = 5_000.0
# Audio not yet committed beyond this is dropped, oldest first (60 s of 24 kHz PCM16: 2.8 MiB).
PENDING_MAX_MS = 60_000.0
# The input is kept in pieces of about this length, dropped whole (no copying on a trim).
_SEGMENT_MS = 1_000.0


# What a client event written upstream does to the input: audio (bytes, or the client's
# base64, decoded only if a turn takes it: most input is silence that is never committed) and
# its format, or a marker.
Written = tuple[bytes | str, str] | Literal["commit", "clear"] | None


def written_by(event: ev.ClientEvent, fmt: str) -> Written:
    """What ``event`` (a client's, in input format ``fmt``) does to the input once written."""
    match event:
        case ev.InputAudioBufferAppend(audio=audio):
            return audio, fmt
        case ev.InputAudioBufferCommit():
            return "commit"
        case ev.InputAudioBufferClear():
            return "clear"
        case _:
            return None


@dataclass
class _Segment:
    """Audio written in one format, from ``start_ms`` of the session's input."""

    start_ms: float
    fmt: str
    parts: list[bytes | str] = field(default_factory=list)
    size: int = 0  # bytes, decoded

    @property
    def end_ms(self) -> float:
        return self.start_ms + bytes_to_ms(self.fmt, self.size)

    def add(self, data: bytes | str) -> None:
        self.parts.append(data)
        self.size += len(data) if isinstance(data, bytes) else _decoded_size(data)

    def audio(self) -> bytes:
        return b"".join(p if isinstance(p, bytes) else _decode(p) for p in self.parts)


def _decoded_size(b64: str) -> int:
    return len(b64) // 4 * 3 - b64[-2:].count("=")


def _decode(b64: str) -> bytes:
    try:
        return base64.b64decode(b64)
    except (binascii.Error, ValueError):  # the upstream refused it too
        return b""


@dataclass
class UserAudio:
    """The input audio written upstream, and the audio of each committed user item."""

    max_bytes: int = ConnectionLimits().max_bytes
    # Turn detection is on (the mirrored configuration says so).
    listening: bool = True
    _stream: list[_Segment] = field(default_factory=list)
    _position_ms: float = 0.0
    # Where the current upstream session's ``audio_*_ms`` count from.
    _origin_ms: float = 0.0
    # Start of the audio not yet committed or cleared.
    _buffer_start_ms: float = 0.0
    # Client commits written and not yet answered: their spans, in order.
    _commits: deque[tuple[float, float]] = field(default_factory=deque)
    # Spans the upstream's speech events gave items, session ms: item id → [start, end].
    _spans: dict[str, list[float | None]] = field(default_factory=dict)
    _items: OrderedDict[str, tuple[bytes, str]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    # -- what the relay writes ------------------------------------------------------------

    def link_opened(self) -> None:
        """A new upstream session starts hearing the input here (its ms count from now, and
        its input buffer starts empty)."""
        self._origin_ms = self._buffer_start_ms = self._position_ms
        self._commits.clear()
        self._spans.clear()

    def write(self, what: Written) -> None:
        """A client event's effect, as it is written to the upstream link."""
        if what == "commit":
            self.commit_written()
        elif what == "clear":
            self.clear_written()
        elif what is not None:
            self.written(*what)

    def written(self, data: bytes | str, fmt: str) -> None:
        """Audio written upstream: bytes, or a client's base64 (assumed valid: one the upstream
        refuses would shift what follows by its length)."""
        last = self._stream[-1] if self._stream else None
        if last is None or last.fmt != fmt or last.end_ms - last.start_ms >= _SEGMENT_MS:
            self._trim()  # once a segment: what it drops is whole segments anyway
            last = _Segment(self._position_ms, fmt)
            self._stream.append(last)
        last.add(data)
        self._position_ms = last.end_ms

    def commit_written(self) -> None:
        start, end = self._buffer_start_ms, self._position_ms
        if end - start >= MIN_COMMIT_MS:  # shorter: the upstream refuses it, nothing moves
            self._commits.append((start, end))
            self._buffer_start_ms = end

    def clear_written(self) -> None:
        self._buffer_start_ms = self._position_ms

    # -- what the upstream says -----------------------------------------------------------

    def observe(self, event: Mapping[str, Any]) -> None:
        """One upstream server event (the input buffer's and item deletions matter)."""
        kind, item_id = event.get("type"), str(event.get("item_id"))
        start, end = event.get("audio_start_ms"), event.get("audio_end_ms")
        if kind == "input_audio_buffer.speech_started" and isinstance(start, int):
            self.speech_started(item_id, start)
        elif kind == "input_audio_buffer.speech_stopped" and isinstance(end, int):
            self.speech_ended(item_id, end)
        elif kind == "input_audio_buffer.timeout_triggered" and isinstance(end, int):
            self.speech_ended(item_id, end, start if isinstance(start, int) else None)
        elif kind == "input_audio_buffer.committed":
            self.committed(item_id)
        elif kind == "input_audio_buffer.cleared":
            self.cleared()
        elif kind == "conversation.item.deleted":
            self.forget(item_id)

    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self._spans[item_id] = [self._origin_ms + audio_start_ms, None]

    def speech_ended(
        self, item_id: str, audio_end_ms: int, audio_start_ms: int | None = None
    ) -> None:
        span = self._spans.setdefault(item_id, [None, None])
        if audio_start_ms is not None:
            span[0] = self._origin_ms + audio_start_ms
        span[1] = self._origin_ms + audio_end_ms

    def committed(self, item_id: str) -> None:
        """The upstream committed the buffer as ``item_id``: keep that item's audio."""
        span = self._spans.pop(item_id, None)
        if span is not None and span[1] is not None:
            start, end = span[0] if span[0] is not None else self._buffer_start_ms, span[1]
            self._buffer_start_ms = max(self._buffer_start_ms, end)
        elif self._commits:
            start, end = self._commits.popleft()
        else:  # a commit we did not see written: the buffer as it stands
            start, end = self._buffer_start_ms, self._position_ms
            self._buffer_start_ms = end
        kept = self._slice(start, end)
        if kept is not None:
            self._keep(item_id, kept)
        self._trim()

    def cleared(self) -> None:
        """The upstream's ``input_audio_buffer.cleared``."""
        self._buffer_start_ms = max(self._buffer_start_ms, self._position_ms)
        self._spans.clear()
        self._trim()

    def forget(self, item_id: str) -> None:
        kept = self._items.pop(item_id, None)
        if kept is not None:
            self._bytes -= len(kept[0])

    def _trim(self) -> None:
        """Drop input audio no item can take any more (see the module's bounds)."""
        position = self._position_ms
        keep_from = self._buffer_start_ms
        if self.listening:
            # What a turn may still take: from an open turn's start, else the recent past.
            opened = [s[0] for s in self._spans.values() if s[0] is not None and s[1] is None]
            keep_from = max(keep_from, min(opened, default=position - IDLE_KEEP_MS))
        keep_from = max(keep_from, position - PENDING_MAX_MS)
        # Commits written and not yet answered keep their audio (within the bound).
        waiting = [s for s, _ in self._commits] + [
            s[0] for s in self._spans.values() if s[0] is not None
        ]
        keep_from = max(min([keep_from, *waiting]), position - PENDING_MAX_MS)
        while self._stream and self._stream[0].end_ms <= keep_from:
            self._stream.pop(0)

    # -- what is kept ---------------------------------------------------------------------

    def audio_of(self, item_id: str) -> tuple[bytes, str] | None:
        """A committed item's audio and its format, if kept."""
        return self._items.get(item_id)

    @property
    def kept_bytes(self) -> int:
        """The items' audio plus the input not yet committed."""
        return self._bytes + sum(s.size for s in self._stream)

    def _slice(self, start_ms: float, end_ms: float) -> tuple[bytes, str] | None:
        """The audio written between two session times, in the format it began in (a
        format change mid-turn ends what is taken); None if none of it is kept."""
        taken = bytearray()
        fmt: str | None = None
        for seg in self._stream:
            if seg.end_ms <= start_ms or seg.start_ms >= end_ms:
                continue
            if fmt is not None and seg.fmt != fmt:
                break
            fmt = seg.fmt
            lo = ms_to_bytes(seg.fmt, max(0.0, start_ms - seg.start_ms))
            hi = ms_to_bytes(seg.fmt, min(end_ms, seg.end_ms) - seg.start_ms)
            taken += seg.audio()[lo:hi]
        return (bytes(taken), fmt) if fmt is not None and taken else None

    def _keep(self, item_id: str, kept: tuple[bytes, str]) -> None:
        self.forget(item_id)
        self._items[item_id] = kept
        self._bytes += len(kept[0])
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (audio, _fmt) = self._items.popitem(last=False)
            self._bytes -= len(audio)
