"""One call's media over RTP (RFC 3550) with G.711 both ways and RFC 4733 DTMF.

`RtpStream` is the session's `Playout` for a phone leg and the source of its microphone audio:
- out: every 20 ms a pacer (`rtp_pacer.py`) takes 160 samples of G.711 from the playout core
  and sends them as one packet (sequence numbers +1, timestamps +160, jumping with the clock
  over a stall), silence when nothing plays, nothing while the call is on hold. By default
  that is the process's pacer thread, so a busy event loop does not delay packets; with an
  injected clock (tests) a pacer task on that clock. What the loop and the pacer share (the
  playout core, the send state) is behind locks; the playout counts a frame as heard when
  the pacer takes it to send;
- in: packets go through a jitter buffer (`jitter.py`) and on to ``on_audio`` as soon as they
  are in order, in the stream's G.711 format (``stream.format``;
  `Session.track_audio(audio, stream.format)` takes it as it is). A 20 ms clock only decides
  when a packet is overdue (``JitterBuffer.depth`` frames behind the clock): it becomes 20 ms
  of silence, lost or just not sent (a phone that stops sending in silence), so the session's
  timeline keeps pace with the call and a turn can end;
  telephone events go to ``on_dtmf`` once per key press;
- symmetric RTP: packets are sent to the address the caller's packets come from (the first
  one latches it), so a caller behind NAT hears the reply; ``set_remote`` (from SDP) is used
  until then, and resets the latch;
- RTCP is ignored: nothing listens on the odd port, and RTCP muxed onto this one is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ..session.clock import Clock, SystemClock
from ..session.playout import (
    G711_ALAW,
    G711_ULAW,
    FramePacer,
    PlayoutFormat,
    PlayoutFront,
    ServerPlayout,
    silence,
)
from .jitter import JitterBuffer
from .rtp_pacer import LoopPacer, Pacer, shared_pacer
from .rtp_wire import DtmfReceiver, NotRtp, RtpPacket, parse_rtp

log = logging.getLogger(__name__)

Codec = Literal["PCMU", "PCMA"]
Address = tuple[str, int]
CODECS: dict[str, PlayoutFormat] = {"PCMU": G711_ULAW, "PCMA": G711_ALAW}
RATE = 8000
FRAME_S = 0.02
FRAME_SAMPLES = int(RATE * FRAME_S)
# The caller's audio waiting for the session, in frames (1 s). Policy when full (the session
# fell that far behind): the oldest is dropped and counted.
HEARD_QUEUE = 50


@dataclass
class RtpStats:
    sent: int = 0
    unsent: int = 0  # packets the socket refused (buffer full, no route)
    overrun: int = 0  # frames of the caller's audio dropped: the session fell behind
    received: int = 0
    ignored: int = 0  # not RTP, RTCP, an unknown payload type, or from a stranger


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, stream: RtpStream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.stream.datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is not listening (yet).
        log.debug("RTP socket error: %s", exc)


class RtpStream(PlayoutFront):
    """A G.711 RTP stream on one local UDP port: see the module docstring."""

    def __init__(
        self,
        codec: Codec,
        payload_type: int,
        dtmf_payload_type: int | None,
        clock: Clock,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}; expected PCMU or PCMA")
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.clock = clock
        loop = asyncio.get_running_loop()
        self.playout = ServerPlayout(CODECS[codec], post=loop.call_soon_threadsafe)
        self.stats = RtpStats()
        self.jitter = JitterBuffer()
        self.local_port = 0
        # Set by whoever serves the call: the caller's audio (in ``format``) and keys.
        self.on_audio: Callable[[bytes], Awaitable[None]] | None = None
        self.on_dtmf: Callable[[str], Awaitable[None]] | None = None
        self._remote: Address | None = None
        self._latched = False
        self._held = False
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._pacer: Pacer | None = None
        self._own_pacer: LoopPacer | None = None
        # The send state below (and _remote, _latched, _held) is shared with the pacer.
        self._lock = threading.Lock()
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp0 = secrets.randbits(32)
        self._marker = True
        self._dtmf = DtmfReceiver()
        self._keys: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._heard_any = False
        self._heard: asyncio.Queue[bytes] = asyncio.Queue(maxsize=HEARD_QUEUE)
        # Samples handed on minus samples of the clock since the caller was first heard.
        self._ahead = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port_range: tuple[int, int],
        codec: Codec = "PCMU",
        payload_type: int = 0,
        dtmf_payload_type: int | None = 101,
        clock: Clock | None = None,
        pacer: Pacer | None = None,
    ) -> RtpStream:
        """Bind an even port in ``port_range`` (inclusive) on ``host`` and start the media
        clock; OSError when every port is taken. Outbound packets go out on ``pacer``; by
        default the process's pacer thread, or with ``clock`` a pacer on that clock."""
        stream = cls(codec, payload_type, dtmf_payload_type, clock or SystemClock())
        await stream._bind(host, port_range)
        if pacer is None and clock is not None:
            pacer = stream._own_pacer = LoopPacer(clock)
        stream._pacer = pacer or shared_pacer()
        stream._pacer.add(stream)
        stream._tasks = [
            asyncio.create_task(stream._overdue_loop(), name=f"rtp:{stream.local_port}:clock"),
            asyncio.create_task(stream._hear_loop(), name=f"rtp:{stream.local_port}:recv"),
            asyncio.create_task(stream._key_loop(), name=f"rtp:{stream.local_port}:dtmf"),
        ]
        return stream

    async def _bind(self, host: str, port_range: tuple[int, int]) -> None:
        low, high = port_range
        ports = list(range(low + (low & 1), high + 1, 2)) or list(range(low, high + 1))
        random.shuffle(ports)  # concurrent calls rarely race for the same port
        loop = asyncio.get_running_loop()
        family = (await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM))[0][0]
        for port in ports:
            # Our own socket: the loop reads it, the pacer sends on it (same port both ways,
            # which symmetric RTP needs), never blocking: a full buffer drops the packet.
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
            self._transport, self._sock = transport, sock
            self.local_port = int(sock.getsockname()[1])
            return
        raise OSError(f"no free RTP port in {low}-{high} on {host}")

    # -- control --------------------------------------------------------------------------

    def use_codec(self, codec: Codec, payload_type: int, dtmf_payload_type: int | None) -> None:
        """Send and receive what the far end's SDP answer chose (an outbound call offers
        several codecs); before any reply audio is queued."""
        if codec not in CODECS:
            raise ValueError(f"unsupported codec {codec!r}; expected PCMU or PCMA")
        self.playout.reformat(CODECS[codec])
        self.codec, self.payload_type = codec, payload_type
        self.dtmf_payload_type = dtmf_payload_type

    @property
    def remote(self) -> Address | None:
        return self._remote

    def set_remote(self, address: Address) -> None:
        """Where to send (from the peer's SDP); the next packet from the peer may move it."""
        with self._lock:
            self._remote = address
            self._latched = False

    def hold(self, on: bool) -> None:
        """On hold nothing is sent or played (the reply waits) and the caller's audio is
        ignored; off hold both resume."""
        with self._lock:
            if on != self._held:
                self._held = on
                self._marker = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pacer is not None:
            self._pacer.remove(self)  # returns once no packet of ours is being sent
        if self._own_pacer is not None:
            await self._own_pacer.close()
        self.playout.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    # -- inbound --------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Address) -> None:
        """One datagram from the socket (sans-IO apart from the callbacks it queues)."""
        try:
            packet = parse_rtp(data)
        except NotRtp:
            self.stats.ignored += 1
            return
        if self._latched and addr != self._remote:
            self.stats.ignored += 1  # a stranger's packets do not steal the call
            return
        if packet.payload_type == self.payload_type:
            self._latch(addr)
            self.stats.received += 1
            if not self._held:
                self._heard_any = True
                self.jitter.push(packet.sequence, packet.payload)
                self._hand_on(self.jitter.release())
        elif packet.payload_type == self.dtmf_payload_type:
            self._latch(addr)
            self.stats.received += 1
            for event in self._dtmf.feed(packet.timestamp, packet.payload):
                if event.kind == "start":
                    with contextlib.suppress(asyncio.QueueFull):
                        self._keys.put_nowait(event.digit)
        else:
            self.stats.ignored += 1  # comfort noise, another codec: nothing to hear

    def _latch(self, addr: Address) -> None:
        if not self._latched:
            if self._remote is not None and addr != self._remote:
                log.info("RTP on port %d latched to %s:%d", self.local_port, *addr)
            with self._lock:
                self._remote, self._latched = addr, True

    def _hand_on(self, frames: list[bytes]) -> None:
        width = self.format.bytes_per_sample
        for audio in frames:
            # A sender ahead of the clock banks at most the buffer's bound, so silence from
            # a phone that stops sending still ends the turn in time.
            limit = self.jitter.max_depth * FRAME_SAMPLES
            self._ahead = min(self._ahead + len(audio) // width, limit)
            if self._heard.full():
                self._heard.get_nowait()
                self.stats.overrun += 1
            self._heard.put_nowait(audio)

    async def _overdue_loop(self) -> None:
        """Every 20 ms: conceal the slots the caller's audio is overdue for."""
        pacer = FramePacer(self.clock, FRAME_S)
        quiet = silence(self.format, FRAME_SAMPLES)
        while True:
            await pacer.next_frame()
            if self._held or not self._heard_any:
                continue
            self._ahead -= FRAME_SAMPLES
            while self._ahead < -self.jitter.depth * FRAME_SAMPLES:
                self.jitter.conceal()
                self._hand_on([quiet, *self.jitter.release()])

    async def _hear_loop(self) -> None:
        while True:
            audio = await self._heard.get()
            if self.on_audio is not None:
                await self.on_audio(audio)

    async def _key_loop(self) -> None:
        while True:
            digit = await self._keys.get()
            if self.on_dtmf is not None:
                await self.on_dtmf(digit)

    # -- outbound -------------------------------------------------------------------------

    def send_frame(self, index: int) -> None:
        """Frame ``index`` (20 ms steps of the pacer's clock since the stream started): the
        next 160 samples of the playout, sent at once. Runs on the pacer's thread."""
        with self._lock:
            remote = self._remote
            if self._held or remote is None or self._sock is None:
                self._marker = True
                return
            packet = RtpPacket(
                self.payload_type,
                self._sequence,
                self._timestamp0 + index * FRAME_SAMPLES,
                self._ssrc,
                self.playout.take(FRAME_SAMPLES),
                marker=self._marker,
            )
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._marker = False
        try:
            self._sock.sendto(packet.encode(), remote)
        except OSError:  # a full socket buffer or no route: this packet is lost
            self.stats.unsent += 1
        else:
            self.stats.sent += 1
