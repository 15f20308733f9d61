"""RTP for phone calls: the packet codec, the jitter buffer and RFC 4733 DTMF without sockets;
then `RtpStream` over real UDP on loopback against a peer socket playing the caller."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from conftest import free_port
from voxgate.audio import pcm16_to_ulaw
from voxgate.session.clock import VirtualClock
from voxgate.session.playout import G711_ULAW, silence
from voxgate.transports.jitter import JitterBuffer
from voxgate.transports.rtp import RtpStream
from voxgate.transports.rtp_wire import (
    DtmfReceiver,
    NotRtp,
    RtpPacket,
    SequenceUnwrapper,
    dtmf_payload,
    is_rtcp,
    parse_rtp,
)

# -- codec ----------------------------------------------------------------------------------


def test_a_packet_survives_the_round_trip() -> None:
    packet = RtpPacket(0, 65535, 2**32 - 160, 0xDEADBEEF, b"\x7f" * 160, marker=True)
    assert parse_rtp(packet.encode()) == packet


def test_csrcs_extension_and_padding_are_skipped() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 8, 7, 1234, 42)
    csrcs = b"\x00" * 8
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x01\x02\x03\x04"
    payload = b"\xd5" * 160
    padding = b"\x00\x00\x03"
    packet = parse_rtp(header + csrcs + extension + payload + padding)
    assert (packet.payload_type, packet.sequence, packet.payload) == (8, 7, payload)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\x00", b"\x40" + bytes(15), struct.pack("!BBHII", 0x8F, 0, 1, 1, 1)],
    ids=["empty", "short", "version-1", "csrcs-past-the-end"],
)
def test_what_is_not_rtp_is_refused(data: bytes) -> None:
    with pytest.raises(NotRtp):
        parse_rtp(data)


def test_rtcp_is_recognised_and_refused() -> None:
    report = struct.pack("!BBHI", 0x81, 200, 6, 42) + bytes(20)
    assert is_rtcp(report)
    with pytest.raises(NotRtp, match="RTCP"):
        parse_rtp(report)


def test_sequence_numbers_extend_across_the_wrap() -> None:
    unwrap = SequenceUnwrapper()
    assert [unwrap.extend(s) for s in (65534, 65535, 0, 65533, 1)] == [
        65534,
        65535,
        65536,
        65533,
        65537,
    ]


# -- jitter buffer --------------------------------------------------------------------------


def frame(n: int) -> bytes:
    return bytes([n % 256]) * 160


def test_packets_in_order_are_released_at_once_and_reordering_is_undone() -> None:
    jb = JitterBuffer(depth=3)
    jb.push(101, frame(1))
    assert jb.release() == [frame(1)]  # no fixed delay before the listener hears it
    jb.push(103, frame(3))
    assert jb.release() == []  # 102 is due first
    jb.push(102, frame(2))
    assert jb.release() == [frame(2), frame(3)]
    assert jb.held == 0 and jb.stats.played == 3


def test_a_lost_packet_is_concealed_once_and_a_late_one_dropped() -> None:
    jb = JitterBuffer()
    for seq in (10, 11, 13, 14):
        jb.push(seq, frame(seq))
    assert jb.release() == [frame(10), frame(11)]
    jb.conceal()  # 12 is overdue and 13 is held: 12 is lost, one slot of silence
    assert jb.release() == [frame(13), frame(14)]
    jb.push(12, frame(12))  # too late: its slot has played
    assert jb.release() == []
    assert (jb.stats.lost, jb.stats.late, jb.stats.played) == (1, 1, 4)


def test_a_quiet_sender_is_concealed_without_giving_up_on_its_next_packet() -> None:
    jb = JitterBuffer()
    jb.push(65535, frame(1))
    assert jb.release() == [frame(1)]
    jb.conceal()  # nothing held: the phone stopped sending (or the network stalled)
    jb.conceal()
    assert jb.stats.underruns == 2 and jb.stats.lost == 0
    jb.push(0, frame(2))  # the next number, across the wrap: still awaited, not late
    assert jb.release() == [frame(2)]


def test_duplicates_are_dropped_and_a_burst_is_bounded() -> None:
    jb = JitterBuffer(max_depth=4)
    jb.push(1, frame(1))
    jb.push(1, frame(1))
    assert jb.stats.duplicate == 1 and jb.release() == [frame(1)]
    for seq in range(3, 10):  # 2 never came: everything after it is held
        jb.push(seq, frame(seq))
    assert jb.held == 4 and jb.stats.overflow == 3
    # The oldest were skipped: the latency a gap can build stays bounded.
    assert jb.release() == [frame(6), frame(7), frame(8), frame(9)]


def test_a_restarted_sender_is_followed() -> None:
    jb = JitterBuffer(max_depth=4)
    jb.push(500, frame(1))
    assert jb.release() == [frame(1)]
    jb.push(40, frame(2))  # far behind: a new numbering, not a late packet
    assert jb.release() == [frame(2)] and jb.stats.late == 0


# -- RFC 4733 -------------------------------------------------------------------------------


def test_a_key_press_is_one_start_and_one_end_despite_repeated_end_packets() -> None:
    rx = DtmfReceiver()
    seen = []
    for duration in (160, 320, 480):
        seen += rx.feed(8000, dtmf_payload("5", end=False, duration=duration))
    for _ in range(3):  # the end packet is sent three times
        seen += rx.feed(8000, dtmf_payload("5", end=True, duration=640))
    seen += rx.feed(9600, dtmf_payload("#", end=True, duration=400))  # its start packets lost
    assert [(e.digit, e.kind) for e in seen] == [
        ("5", "start"),
        ("5", "end"),
        ("#", "start"),
        ("#", "end"),
    ]
    assert rx.feed(9600, b"\x10\x80\x00\xa0") == []  # event 16 is not a key


# -- RtpStream over UDP ---------------------------------------------------------------------


class Caller:
    """The far end of the call: a plain UDP socket that sends and reads RTP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sequence = 1000

    def send(self, port: int, payload: bytes, *, pt: int = 0, ts: int = 0) -> None:
        packet = RtpPacket(pt, self.sequence, ts or self.sequence * 160, 7, payload)
        self.sequence += 1
        self.sock.sendto(packet.encode(), ("127.0.0.1", port))

    async def receive(self, count: int) -> list[RtpPacket]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            return [parse_rtp(await loop.sock_recv(self.sock, 2048)) for _ in range(count)]


@pytest.fixture
def new_caller() -> Iterator[Callable[[], Caller]]:
    made: list[Caller] = []

    def make() -> Caller:
        made.append(Caller())
        return made[-1]

    yield make
    for caller in made:
        caller.sock.close()


@pytest.fixture
async def stream() -> AsyncIterator[RtpStream]:
    s = await RtpStream.open("127.0.0.1", (40000, 40100), "PCMU", 0, 101)
    yield s
    await s.close()


async def test_reply_audio_leaves_in_paced_20ms_packets_with_rising_numbers(
    stream: RtpStream, new_caller: Callable[[], Caller]
) -> None:
    caller = new_caller()
    assert 40000 <= stream.local_port <= 40100 and stream.local_port % 2 == 0
    stream.set_remote(caller.address)
    reply = pcm16_to_ulaw(b"\x00\x20" * 480)  # 60 ms
    stream.play("r1", "i1", 0, reply)
    stream.end("r1")
    packets = await caller.receive(5)
    seqs = [p.sequence for p in packets]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
    stamps = [p.timestamp - packets[0].timestamp for p in packets]
    assert stamps == [0, 160, 320, 480, 640]
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in packets)
    assert b"".join(p.payload for p in packets[:3]) == reply
    assert packets[3].payload == silence(G711_ULAW, 160)


class Heard:
    """What the session would hear: every 20 ms of the caller's audio, as it comes."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._changed = asyncio.Event()

    async def __call__(self, audio: bytes) -> None:
        self.frames.append(audio)
        self._changed.set()

    async def until(self, frame: bytes) -> None:
        async with asyncio.timeout(5):
            while frame not in self.frames:
                self._changed.clear()
                await self._changed.wait()


async def test_symmetric_rtp_answers_where_the_callers_packets_come_from(
    stream: RtpStream, new_caller: Callable[[], Caller]
) -> None:
    caller = new_caller()
    stream.set_remote(("127.0.0.1", 9))  # what the SDP said: wrong behind NAT
    heard = Heard()
    stream.on_audio = heard
    for _ in range(4):
        caller.send(stream.local_port, b"\x10" * 160)
    await heard.until(b"\x10" * 160)
    assert stream.remote == caller.address
    assert len(await caller.receive(1)) == 1  # the reply path follows the caller

    stranger = new_caller()
    stranger.send(stream.local_port, b"\x22" * 160)
    caller.send(stream.local_port, b"\x11" * 160)
    await heard.until(b"\x11" * 160)
    assert stream.remote == caller.address and b"\x22" * 160 not in heard.frames
    assert stream.stats.ignored >= 1


async def test_a_lost_packet_is_heard_as_20ms_of_silence(
    stream: RtpStream, new_caller: Callable[[], Caller]
) -> None:
    caller = new_caller()
    heard = Heard()
    stream.on_audio = heard
    for n in range(8):
        if n == 4:
            caller.sequence += 1  # lost on the way
            continue
        caller.send(stream.local_port, bytes([0x40 + n]) * 160)
    await heard.until(b"\x47" * 160)
    spoken = [f for f in heard.frames if f != silence(G711_ULAW, 160)]
    assert spoken == [bytes([0x40 + n]) * 160 for n in (0, 1, 2, 3, 5, 6, 7)]
    gap = heard.frames.index(b"\x45" * 160) - heard.frames.index(b"\x43" * 160)
    assert gap == 2 and stream.jitter.stats.lost == 1


async def test_dtmf_keys_reach_the_callback_once_each(
    stream: RtpStream, new_caller: Callable[[], Caller]
) -> None:
    caller = new_caller()
    keys: list[str] = []
    two = asyncio.Event()

    async def on_dtmf(digit: str) -> None:
        keys.append(digit)
        if len(keys) == 2:
            two.set()

    stream.on_dtmf = on_dtmf
    for ts, digit in ((1600, "1"), (4800, "9")):
        caller.send(stream.local_port, dtmf_payload(digit, end=False, duration=160), pt=101, ts=ts)
        for _ in range(3):
            caller.send(
                stream.local_port, dtmf_payload(digit, end=True, duration=800), pt=101, ts=ts
            )
    async with asyncio.timeout(5):
        await two.wait()
    assert keys == ["1", "9"]


async def test_on_hold_nothing_is_sent_and_the_reply_waits(
    new_caller: Callable[[], Caller],
) -> None:
    clock = VirtualClock()
    stream = await RtpStream.open("127.0.0.1", (40000, 40100), clock=clock)
    try:
        caller = new_caller()
        stream.set_remote(caller.address)
        await clock.advance(0.02)
        await caller.receive(1)
        stream.hold(True)
        stream.play("r1", "i1", 0, b"\x33" * 160)
        sent = stream.stats.sent
        await clock.advance(0.1)
        assert stream.stats.sent == sent and stream.playout.core.queued_s > 0
        stream.hold(False)
        await clock.advance(0.02)
        (packet,) = await caller.receive(1)
        assert packet.payload == b"\x33" * 160 and packet.marker  # a new talkspurt
        assert stream.playout.core.queued_s == 0
    finally:
        await stream.close()


async def test_every_port_taken_is_a_clear_error() -> None:
    port = free_port() & ~1
    first = await RtpStream.open("127.0.0.1", (port, port + 1))
    try:
        with pytest.raises(OSError, match=f"no free RTP port in {port}-{port + 1}"):
            await RtpStream.open("127.0.0.1", (port, port + 1))
    finally:
        await first.close()


async def test_a_cut_reports_exactly_what_the_caller_was_sent(
    new_caller: Callable[[], Caller],
) -> None:
    """Barge-in over RTP: the cut is at the last 20 ms packet that left, so the item is
    truncated to what the caller heard, written once in the playout core."""
    clock = VirtualClock()
    stream = await RtpStream.open("127.0.0.1", (40000, 40100), clock=clock)
    try:
        caller = new_caller()
        stream.set_remote(caller.address)
        stream.play("r1", "i1", 0, b"\x40" * 8000)  # one second of reply
        for _ in range(7):
            await clock.advance(0.02)
        packets = await caller.receive(7)
        assert all(p.payload == b"\x40" * 160 for p in packets)
        cut = stream.clear(None)
        assert stream.stats.sent == 7
        assert cut is not None and (cut.item_id, cut.played_ms) == ("i1", 7 * 20)
    finally:
        await stream.close()
