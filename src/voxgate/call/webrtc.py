"""A WebRTC client peer for the Realtime API, as a browser would be: for tests and benchmarks.

One ``RTCPeerConnection`` (aiortc) with three parts:

- ``MicrophoneTrack``: the outbound audio track. It plays queued 24 kHz PCM16 mono in 20 ms
  frames, each leaving when the clock reaches the end of the audio it carries, and silence
  whenever nothing is queued, like a live microphone.
- ``EventChannel``: the ``oai-events`` data channel. Client events go out as JSON text; every
  server event is kept, stamped with its arrival time, and handed out in order.
- ``AudioRecorder``: what arrives on the remote audio track, mono PCM16 frames stamped with
  their arrival time, so that callers can find gaps and the first audible sound.

SDP is exchanged by the caller, in two steps (``create_offer``, then ``accept_answer``), so
that any HTTP client can carry it: ``post_offer`` here (raw ``application/sdp``), or the
``openai`` SDK's ``realtime.calls.create`` (multipart).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from ..audio.resample import resample
from ..session.clock import Clock, SystemClock

RATE = 24000  # the outbound track's rate: the Realtime API's PCM rate
FRAME_SECONDS = 0.02
FRAME_SAMPLES = round(RATE * FRAME_SECONDS)
FRAME_BYTES = 2 * FRAME_SAMPLES
# A frame whose loudest sample is above this (about -54 dBFS) is sound, not silence. Opus
# leaves faint noise in decoded silence, so "not zero" would not do.
AUDIBLE_LEVEL = 64
EVENTS_LABEL = "oai-events"
CLOSE_TIMEOUT_S = 5.0


class PeerClosed(Exception):
    """The peer was closed (or the server ended the call) while something waited on it."""


class CallSetupError(Exception):
    """The server refused the SDP offer; ``status`` and ``body`` are its answer."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"call set-up refused with HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------------------------
# The microphone
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """When the frame carrying an utterance's last sample left (clock time), and where that
    sample is in the outbound stream (seconds from the first frame)."""

    at: float
    stream_s: float


class MicrophoneTrack(MediaStreamTrack):
    """Outbound audio at the pace of a live microphone.

    Frame k leaves when the clock reaches the end of the audio it carries (start + (k+1) x
    20 ms), with pts k x 480 at 24 kHz. The schedule is fixed from the first frame, so a late
    wake-up is caught up rather than added; ``max_late`` is how far it ever fell behind.
    Utterances start on a frame boundary; the last frame of one is topped up with silence.
    """

    kind = "audio"

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self._clock = clock or SystemClock()
        self._queue: deque[tuple[bytes, asyncio.Future[Sent]]] = deque()
        self._current = b""
        self._speaking: asyncio.Future[Sent] | None = None
        self._start: float | None = None
        self.frames_sent = 0
        self.max_late = 0.0

    def say(self, pcm: bytes) -> asyncio.Future[Sent]:
        """Queue 24 kHz PCM16 mono after whatever is queued; the future resolves once its
        last sample has been sent (or fails with ``PeerClosed`` if the track stops first)."""
        if self.readyState != "live":
            raise PeerClosed("the microphone track has stopped")
        sent: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        self._queue.append((pcm[: len(pcm) // 2 * 2], sent))
        return sent

    @property
    def idle(self) -> bool:
        """Nothing queued or being sent: the microphone is sending silence."""
        return not self._current and not self._queue

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + (self.frames_sent + 1) * FRAME_SECONDS
        if due > now:
            await self._clock.sleep(due - now)
        else:
            self.max_late = max(self.max_late, now - due)
        chunk, finished = self._next_chunk()
        samples = np.frombuffer(chunk.ljust(FRAME_BYTES, b"\0"), dtype="<i2")
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.frames_sent * FRAME_SAMPLES
        frame.time_base = Fraction(1, RATE)
        self.frames_sent += 1
        if finished is not None and not finished.done():
            stream_s = (self.frames_sent - 1) * FRAME_SECONDS + len(chunk) / 2 / RATE
            finished.set_result(Sent(self._clock.monotonic(), stream_s))
        return frame

    def _next_chunk(self) -> tuple[bytes, asyncio.Future[Sent] | None]:
        """Up to one frame of queued audio, and the utterance it ends, if it ends one."""
        if not self._current and self._queue:
            self._current, self._speaking = self._queue.popleft()
        chunk, self._current = self._current[:FRAME_BYTES], self._current[FRAME_BYTES:]
        finished = None
        if self._speaking is not None and not self._current:
            finished, self._speaking = self._speaking, None
        return chunk, finished

    def stop(self) -> None:
        super().stop()
        pending = [f for f in (self._speaking, *(f for _, f in self._queue)) if f is not None]
        self._queue.clear()
        self._current, self._speaking = b"", None
        for future in pending:
            _fail(future, PeerClosed("the microphone stopped before the audio was sent"))


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        # Whoever awaits it still gets the error; nobody awaiting it is not a bug.
        future.exception()


# ---------------------------------------------------------------------------------------------
# The data channel
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One server event as it arrived: clock time, its ``type``, the raw JSON and the parsed
    object."""

    at: float
    type: str
    raw: str
    data: dict[str, Any]


class EventChannel:
    """The ``oai-events`` data channel: ``send`` client events, read server events in order.

    Every server event is kept in ``received`` (a test or benchmark client: the record is
    the point, so nothing is dropped); ``next`` and ``until`` hand them out one at a time from
    a cursor, waiting when there are no new ones. Closing wakes every waiter with
    ``PeerClosed``.
    """

    def __init__(self, channel: RTCDataChannel, clock: Clock | None = None) -> None:
        self._channel = channel
        self._clock = clock or SystemClock()
        self.received: list[ServerEvent] = []
        self._cursor = 0
        self._arrived = asyncio.Event()
        self._opened = asyncio.Event()
        self._closed = False
        channel.on("open", self._opened.set)
        channel.on("message", self._on_message)
        channel.on("close", self.mark_closed)

    async def wait_open(self, timeout_s: float = 10.0) -> None:
        """Until the channel is open (the connection is up); ``TimeoutError`` if it is not
        within ``timeout_s``, ``PeerClosed`` if it closed first."""
        async with asyncio.timeout(timeout_s):
            await self._opened.wait()
        self._check_open()

    def send(self, event: dict[str, Any]) -> None:
        """Send one client event as JSON text. The channel must be open."""
        if self._channel.readyState != "open":
            raise PeerClosed(f"the {EVENTS_LABEL} channel is {self._channel.readyState}")
        self._channel.send(json.dumps(event))

    async def next(self, timeout_s: float = 20.0) -> ServerEvent:
        """The next server event not handed out yet."""
        async with asyncio.timeout(timeout_s):
            while self._cursor >= len(self.received):
                self._check_open()
                self._arrived.clear()
                await self._arrived.wait()
        event = self.received[self._cursor]
        self._cursor += 1
        return event

    async def until(
        self, kind: str | Callable[[ServerEvent], bool], timeout_s: float = 30.0
    ) -> list[ServerEvent]:
        """Events handed out up to and including the first whose type is ``kind`` (or, given a
        callable, for which it returns true)."""
        match = kind if callable(kind) else (lambda e: e.type == kind)
        seen: list[ServerEvent] = []
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.next(timeout_s)
                seen.append(event)
                if match(event):
                    return seen

    def of_type(self, kind: str) -> list[ServerEvent]:
        """All events received so far of one type."""
        return [e for e in self.received if e.type == kind]

    def _on_message(self, message: str | bytes) -> None:
        at = self._clock.monotonic()
        raw = message if isinstance(message, str) else message.decode(errors="replace")
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        # Not an event object: kept with an empty type, for the caller's checks to catch.
        if not isinstance(data, dict):
            data = {}
        self.received.append(ServerEvent(at, str(data.get("type", "")), raw, data))
        self._arrived.set()

    def mark_closed(self) -> None:
        """No more events will come: wake every waiter (the peer calls it on close)."""
        self._closed = True
        self._arrived.set()
        self._opened.set()

    def _check_open(self) -> None:
        if self._closed:
            raise PeerClosed(f"the {EVENTS_LABEL} channel closed")


# ---------------------------------------------------------------------------------------------
# The remote audio track
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedAudio:
    """One decoded frame of the remote track: arrival (clock time), its pts (in samples of
    ``rate``), mono PCM16 at ``rate`` Hz, and its loudest sample's magnitude."""

    at: float
    pts: int | None
    rate: int
    pcm: bytes
    peak: int

    @property
    def audible(self) -> bool:
        return self.peak > AUDIBLE_LEVEL


class AudioRecorder:
    """Records the remote audio track: every decoded frame in ``frames``, in arrival order
    (the first channel of it: the server's audio is mono). Kept whole, like the events."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self.frames: list[ReceivedAudio] = []
        self._arrived = asyncio.Event()
        self.ended = False

    async def record(self, track: MediaStreamTrack) -> None:
        """Read ``track`` until it ends."""
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if not isinstance(frame, AudioFrame):
                    raise TypeError(f"expected audio frames, got {type(frame).__name__}")
                self.frames.append(self._received(frame))
                self._arrived.set()
        finally:
            self.mark_ended()

    def mark_ended(self) -> None:
        """No more frames will come: wake every waiter (the peer calls it on close)."""
        self.ended = True
        self._arrived.set()

    def _received(self, frame: AudioFrame) -> ReceivedAudio:
        if frame.format.name != "s16":
            raise TypeError(f"expected s16 audio frames, got {frame.format.name}")
        samples = frame.to_ndarray()
        if frame.format.is_planar:
            mono = samples[0]
        else:
            mono = samples.reshape(-1, len(frame.layout.channels))[:, 0]
        mono = np.ascontiguousarray(mono, dtype="<i2")
        peak = int(np.abs(mono.astype(np.int32)).max()) if mono.size else 0
        return ReceivedAudio(
            self._clock.monotonic(), frame.pts, frame.sample_rate, mono.tobytes(), peak
        )

    def first_audible(self, after: float = float("-inf")) -> ReceivedAudio | None:
        """The first frame with sound in it that arrived at or after ``after``."""
        return next((f for f in self.frames if f.at >= after and f.audible), None)

    async def wait_audible(
        self, after: float = float("-inf"), timeout_s: float = 20.0
    ) -> ReceivedAudio:
        """Until a frame with sound in it arrives at or after ``after``; ``PeerClosed`` if the
        track ends first."""
        async with asyncio.timeout(timeout_s):
            while (found := self.first_audible(after)) is None:
                if self.ended:
                    raise PeerClosed("the remote audio track ended")
                self._arrived.clear()
                await self._arrived.wait()
        return found

    def between(self, start: float, end: float) -> list[ReceivedAudio]:
        """Frames that arrived in [start, end]."""
        return [f for f in self.frames if start <= f.at <= end]

    def max_gap(self, start: float, end: float) -> float:
        """The longest time between two frames that arrived one after the other in [start,
        end] (a listener's playout running dry if it is long). Zero for fewer than two."""
        times = [f.at for f in self.between(start, end)]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def pcm(
        self, start: float = float("-inf"), end: float = float("inf"), rate: int = RATE
    ) -> bytes:
        """Mono PCM16 at ``rate`` of the frames that arrived in [start, end], joined."""
        out = bytearray()
        run: list[ReceivedAudio] = []
        # Runs of one rate are resampled whole: frame by frame would leave a seam at each.
        for frame in [*self.between(start, end), None]:
            if run and (frame is None or frame.rate != run[0].rate):
                out += resample(b"".join(f.pcm for f in run), run[0].rate, rate)
                run = []
            if frame is not None:
                run.append(frame)
        return bytes(out)

    def audible_seconds(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        """How much of the audio that arrived in [start, end] has sound in it, frame by frame."""
        return sum(len(f.pcm) / 2 / f.rate for f in self.between(start, end) if f.audible)


# ---------------------------------------------------------------------------------------------
# The peer
# ---------------------------------------------------------------------------------------------


class WebRTCPeer:
    """A client peer: microphone track out, ``oai-events`` channel, remote audio recorded.

    Use: ``offer = await peer.create_offer()``; send it to the server; ``await
    peer.accept_answer(answer)``; ``await peer.events.wait_open()``. ``close`` (or leaving
    ``async with``) ends it all; it is idempotent and bounded in time.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        # No STUN server: the default one is on the internet, and gathering would wait on it.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = MicrophoneTrack(clock)
        self.pc.addTrack(self.microphone)
        self.events = EventChannel(self.pc.createDataChannel(EVENTS_LABEL), clock)
        self.audio = AudioRecorder(clock)
        self._recording: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    async def create_offer(self) -> str:
        """The SDP offer, with every ICE candidate in it (aiortc gathers before answering)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        """Apply the server's SDP answer; the connection then comes up by itself."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def say(self, pcm: bytes) -> asyncio.Future[Sent]:
        """Queue 24 kHz PCM16 mono speech on the microphone (see ``MicrophoneTrack.say``)."""
        return self.microphone.say(pcm)

    def send(self, event: dict[str, Any]) -> None:
        """Send a client event on the data channel."""
        self.events.send(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self._recording is not None or self._closing is not None:
            return
        self._recording = asyncio.create_task(
            self.audio.record(track), name="webrtc-peer-remote-audio"
        )

    async def close(self) -> None:
        """Stop the microphone, close the connection and stop recording, in that order,
        within ``CLOSE_TIMEOUT_S``. Safe to call more than once or concurrently; a caller
        cancelled while waiting does not interrupt the close."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="webrtc-peer-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self.microphone.stop()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.pc.close()
        except TimeoutError:
            pass  # what aiortc left running stops with the loop; the peer is unusable anyway
        finally:
            recording = self._recording
            if recording is not None:
                recording.cancel()
                await asyncio.wait([recording])
                if not recording.cancelled():
                    recording.exception()  # a failed recording has nothing left to report
            self.audio.mark_ended()
            self.events.mark_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# ---------------------------------------------------------------------------------------------
# Exchanging SDP over plain HTTP
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """The server's answer to an offer: the call id (from ``Location``) and the SDP."""

    call_id: str
    sdp: str


def call_id_from_location(location: str) -> str:
    """The call id in a ``Location`` header (``/v1/realtime/calls/rtc_…``): its last segment."""
    call_id = urlsplit(location).path.rstrip("/").rpartition("/")[2]
    if not call_id:
        raise ValueError(f"no call id in Location {location!r}")
    return call_id


async def post_offer(
    http: httpx.AsyncClient,
    base_url: str,
    offer: str,
    *,
    api_key: str,
    model: str | None = None,
) -> CallAnswer:
    """``POST {base_url}/realtime/calls`` with the offer as raw ``application/sdp``.

    ``base_url`` ends in ``/v1`` (the SDK's base URL). Raises ``CallSetupError`` unless the
    server answers 201 with a ``Location``.
    """
    response = await http.post(
        f"{base_url.rstrip('/')}/realtime/calls",
        content=offer.encode(),
        params={"model": model} if model else None,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/sdp"},
    )
    location = response.headers.get("location")
    if response.status_code != 201 or not location:
        raise CallSetupError(response.status_code, response.text)
    return CallAnswer(call_id_from_location(location), response.text)


async def hang_up(http: httpx.AsyncClient, base_url: str, call_id: str, *, api_key: str) -> int:
    """``POST {base_url}/realtime/calls/{call_id}/hangup``; the HTTP status (404: no such
    call, for instance one that already ended)."""
    response = await http.post(
        f"{base_url.rstrip('/')}/realtime/calls/{call_id}/hangup",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    return response.status_code
