"""The Realtime API over WebRTC (aiortc): one `WebRTCCall` per ``POST /v1/realtime/calls``.

A call is an aiortc peer connection with three parts the session sees through its interfaces:
- `EventChannel`: the client's ``oai-events`` data channel as the session's `Transport`
  (every server event but audio deltas; client events the other way);
- `PlayoutTrack`: the answer's audio track, the session's `Playout`. It plays reply audio on
  its own clock (20 ms frames, increasing timestamps, silence in between), so it knows how
  much of each reply the user heard: that is where a barge-in truncates the item;
- the microphone pump: the offer's audio track, decoded by aiortc (in its own thread),
  resampled to 24 kHz mono and fed to the session as input audio.
Opus encoding happens in aiortc's executor, not on the event loop.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from ..protocol.ids import new_id
from ..session.clock import Clock, SystemClock
from ..session.playout import PCM16_24K, FramePacer, PlayoutFront, ServerPlayout
from ..session.transport import TransportClosed, TransportStalled

log = logging.getLogger(__name__)

EVENTS_LABEL = "oai-events"
RATE = 24000  # what the session plays and hears: 24 kHz PCM16 mono
FRAME_S = 0.02
FRAME_SAMPLES = int(RATE * FRAME_S)
# Client events queued on the data channel before the session has read them.
MAX_PENDING_EVENTS = 1024
# Unsent bytes the events channel may hold before sends wait for the peer to read.
CHANNEL_HIGH_WATER = 1024 * 1024
# A send that waits this long for the peer to read means it stopped reading: the call ends.
SEND_TIMEOUT_S = 20.0


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(12)


class EventChannel:
    """The ``oai-events`` data channel as a session transport. Events the session sends
    before the channel opens wait for it."""

    def __init__(self, *, send_timeout_s: float = SEND_TIMEOUT_S) -> None:
        self._channel: RTCDataChannel | None = None
        self._open = asyncio.Event()
        # The channel queues whatever is sent (SCTP has no bound): past CHANNEL_HIGH_WATER
        # unsent bytes, sends wait for it to drain, at most send_timeout_s.
        self._drained = asyncio.Event()
        self.send_timeout_s = send_timeout_s
        self._closed = asyncio.Event()
        # Client events, then None once the channel is gone.
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._why = "the data channel closed"

    def attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.bufferedAmountLowThreshold = CHANNEL_HIGH_WATER // 2

        @channel.on("bufferedamountlow")
        def _low() -> None:
            self._drained.set()

        @channel.on("open")
        def _opened() -> None:
            self._open.set()

        @channel.on("message")
        def _message(message: str | bytes) -> None:
            if self._incoming.qsize() >= MAX_PENDING_EVENTS:
                self.shut(f"the client sent more than {MAX_PENDING_EVENTS} events unread")
                return
            self._incoming.put_nowait(message)

        @channel.on("close")
        def _closed() -> None:
            self.shut("the data channel closed")

        if channel.readyState == "open":
            self._open.set()

    def shut(self, why: str) -> None:
        """The channel (or the whole peer connection) is gone."""
        if not self._closed.is_set():
            self._why = why
            self._closed.set()
            self._incoming.put_nowait(None)

    async def receive(self) -> str | bytes:
        message = await self._incoming.get()
        if message is None:
            self._incoming.put_nowait(None)  # for any later receive
            raise TransportClosed(self._why)
        return message

    async def send(self, text: str) -> None:
        if not self._open.is_set():
            await _first(self._open.wait(), self._closed.wait())
        if self._closed.is_set() or self._channel is None:
            raise TransportClosed(self._why)
        if self._channel.bufferedAmount > CHANNEL_HIGH_WATER:
            await self._drain()
        try:
            self._channel.send(text)
        except ValueError as exc:  # over the peer's max-message-size: this event only
            log.warning("dropped a server event on %s: %s", EVENTS_LABEL, exc)
            self._channel.send(_too_large(text, str(exc)))
        except Exception as exc:  # aiortc raises InvalidStateError once the channel closed
            raise TransportClosed(str(exc)) from None

    async def _drain(self) -> None:
        self._drained.clear()
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await _first(self._drained.wait(), self._closed.wait())
        except TimeoutError:
            raise TransportStalled(
                f"the peer read nothing from the data channel for {self.send_timeout_s:g} s"
            ) from None
        if self._closed.is_set():
            raise TransportClosed(self._why)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.shut(reason or "closed")
        if self._channel is not None:
            self._channel.close()


def _too_large(text: str, why: str) -> str:
    """The `error` event that stands in for a server event too large for the channel."""
    kind = json.loads(text).get("type", "?")
    error = {
        "type": "invalid_request_error",
        "code": "event_too_large",
        "message": (
            f"A {kind} event was not delivered: {why}. Large payloads (such as the audio in "
            "conversation.item.retrieved) do not fit a data channel message; fetch them over "
            "a sideband WebSocket instead."
        ),
        "param": None,
        "event_id": None,
    }
    return json.dumps({"type": "error", "event_id": new_id("event"), "error": error})


async def _first(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` is done; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class PlayoutTrack(PlayoutFront, MediaStreamTrack):
    """The reply audio track: a thin framer over the session's `ServerPlayout`. Every 20 ms
    of the clock it takes a frame of 24 kHz PCM16 (silence when nothing plays), with
    increasing timestamps."""

    kind = "audio"

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self.playout = ServerPlayout(PCM16_24K)
        self._pacer = FramePacer(clock or SystemClock(), FRAME_S)

    # -- MediaStreamTrack -----------------------------------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = await self._pacer.next_frame()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self.playout.take(FRAME_SAMPLES))
        frame.pts = index * FRAME_SAMPLES
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame

    def stop(self) -> None:
        super().stop()
        self.playout.close()


def ice_configuration(servers: list[dict[str, Any]]) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in servers
        ]
    )


class WebRTCCall:
    """One browser (or other WebRTC peer) call: the peer connection and its parts."""

    def __init__(
        self, ice_servers: list[dict[str, Any]], *, connect_timeout_s: float = 30.0
    ) -> None:
        self.id = new_call_id()
        self.pc = RTCPeerConnection(ice_configuration(ice_servers))
        self.events = EventChannel()
        self.playout = PlayoutTrack()
        self._connect_timeout_s = connect_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by whoever serves the call: where microphone audio (24 kHz PCM16 mono) goes,
        # and what to do when the peer is gone.
        self.microphone: Callable[[bytes], Awaitable[None]] | None = None
        self.on_gone: Callable[[str], None] = lambda why: None

        @self.pc.on("datachannel")
        def _channel(channel: RTCDataChannel) -> None:
            if channel.label == EVENTS_LABEL:
                self.events.attach(channel)

        @self.pc.on("track")
        def _track(track: Any) -> None:
            if track.kind == "audio":
                self._spawn(self._pump(track), "microphone")

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self._gone(f"the WebRTC connection {self.pc.connectionState}")

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the complete answer (no trickle ICE).
        Raises ValueError for an offer that is not usable SDP."""
        if not offer_sdp.lstrip().startswith("v=0") or "\nm=" not in offer_sdp:
            raise ValueError(
                "The SDP offer has no media: offer an audio track (the microphone) and a data "
                f"channel labelled '{EVENTS_LABEL}', as RTCPeerConnection.createOffer() does."
            )
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc raises ValueError and friends for bad SDP
            raise ValueError(f"The SDP offer could not be used: {exc}") from None
        if any(t.kind == "audio" for t in self.pc.getTransceivers()):
            self.pc.addTrack(self.playout)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(self._watch_connect(), "connect-watch")
        return str(self.pc.localDescription.sdp)

    async def close(self) -> None:
        self.events.shut("the call ended")
        self.playout.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()

    def _gone(self, why: str) -> None:
        self.events.shut(why)
        self.on_gone(why)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self.pc.connectionState != "connected":
            self._gone(
                f"the WebRTC connection was not established within {self._connect_timeout_s:g} s"
            )

    async def _pump(self, track: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().tobytes()
                if pcm and self.microphone is not None:
                    await self.microphone(pcm)
