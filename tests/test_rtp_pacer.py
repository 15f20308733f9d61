"""Outbound RTP pacing off the event loop: the schedule without clocks or threads, an
`RtpStream`'s packets as the pacer asks for them, and the real pacer thread over loopback UDP
(start, what the caller receives, the cut on barge-in, and the thread ending with the calls)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise

import pytest

from voxgate.session.playout import G711_ULAW, silence
from voxgate.transports.rtp import RtpStream
from voxgate.transports.rtp_pacer import PACER_NICE, PacedSender, PacerSchedule, ThreadPacer
from voxgate.transports.rtp_wire import RtpPacket, parse_rtp

QUIET = silence(G711_ULAW, 160)

# -- the schedule ---------------------------------------------------------------------------


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, int]]) -> None:
        self.name, self.log = name, log

    def send_frame(self, index: int) -> None:
        self.log.append((self.name, index))


def test_every_tick_sends_each_member_once_in_joining_order() -> None:
    sent: list[tuple[str, int]] = []
    schedule = PacerSchedule(0.02)
    a, b = Recorder("a", sent), Recorder("b", sent)
    schedule.add(a)
    schedule.run_due(10.0)
    assert schedule.next_due() == pytest.approx(10.02)
    schedule.add(b)  # joins mid-tick: its frame 0 is the next tick
    schedule.run_due(10.019)  # not yet due: nothing
    assert sent == [("a", 0)]
    schedule.run_due(10.02)
    schedule.run_due(10.04)
    assert sent == [("a", 0), ("a", 1), ("b", 0), ("a", 2), ("b", 1)]


def test_a_short_stall_is_caught_up_in_order_and_a_long_one_skipped() -> None:
    sent: list[tuple[str, int]] = []
    schedule = PacerSchedule(0.02, max_late_s=0.2)
    schedule.add(Recorder("a", sent))
    schedule.run_due(0.0)
    schedule.run_due(0.065)  # three ticks late: sent back to back, none lost
    assert [i for _, i in sent] == [0, 1, 2, 3]
    sent.clear()
    schedule.run_due(1.0)  # 0.92 s late: the index jumps with the clock, no burst
    assert [i for _, i in sent] == [50]
    assert schedule.next_due() == pytest.approx(1.02)


def test_a_removed_member_sends_nothing_more_and_the_last_one_resets_the_grid() -> None:
    sent: list[tuple[str, int]] = []
    schedule = PacerSchedule(0.02)
    a, b = Recorder("a", sent), Recorder("b", sent)
    schedule.add(a)
    schedule.add(b)
    schedule.run_due(0.0)
    schedule.remove(a)
    schedule.run_due(0.02)
    assert sent == [("a", 0), ("b", 0), ("b", 1)]
    schedule.remove(b)
    assert len(schedule) == 0 and schedule.next_due() is None
    schedule.add(a)  # a fresh grid from its first tick
    schedule.run_due(5.0)
    assert sent[-1] == ("a", 0) and schedule.next_due() == pytest.approx(5.02)


def test_a_sender_that_fails_is_dropped_and_the_others_keep_their_beat() -> None:
    sent: list[tuple[str, int]] = []

    class Broken:
        def send_frame(self, index: int) -> None:
            raise RuntimeError("socket gone")

    schedule = PacerSchedule(0.02)
    broken: PacedSender = Broken()
    schedule.add(broken)
    schedule.add(Recorder("a", sent))
    schedule.run_due(0.0)
    schedule.run_due(0.02)
    assert sent == [("a", 0), ("a", 1)] and len(schedule) == 1


# -- a stream's packets, as the pacer asks for them -----------------------------------------


class ManualPacer:
    """A pacer the test drives by hand: it asks the stream for the frames it names."""

    def __init__(self) -> None:
        self.members: list[PacedSender] = []

    def add(self, sender: PacedSender) -> None:
        self.members.append(sender)

    def remove(self, sender: PacedSender) -> None:
        self.members.remove(sender)


@pytest.fixture
def caller() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def receive(sock: socket.socket, count: int) -> list[RtpPacket]:
    return [parse_rtp(sock.recv(2048)) for _ in range(count)]


async def test_sequence_numbers_run_on_while_timestamps_follow_the_frame_index(
    caller: socket.socket,
) -> None:
    pacer = ManualPacer()
    stream = await RtpStream.open("127.0.0.1", (42000, 42100), pacer=pacer)
    try:
        assert pacer.members == [stream]
        stream.set_remote(caller.getsockname())
        stream.play("r1", "i1", 0, b"\x40" * 320)
        for index in (0, 1, 2, 30):  # frames 3-29 skipped over by a stall
            stream.send_frame(index)
        packets = receive(caller, 4)
        seqs = [p.sequence for p in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
        assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 160, 320, 4800]
        assert [p.marker for p in packets] == [True, False, False, False]
        assert [p.payload for p in packets] == [b"\x40" * 160] * 2 + [QUIET] * 2
        stream.hold(True)
        stream.send_frame(31)  # on hold: nothing leaves, nothing is taken
        stream.hold(False)
        stream.send_frame(32)
        (resumed,) = receive(caller, 1)
        assert resumed.marker and resumed.sequence == (seqs[0] + 4) & 0xFFFF
        assert resumed.timestamp - packets[0].timestamp == 32 * 160
    finally:
        await stream.close()
    assert pacer.members == []


# -- the pacer thread -----------------------------------------------------------------------


def expected_pacer_nice() -> int:
    """PACER_NICE if a new thread of this process may take it, else the process's own
    niceness (probed on a thread of its own, which ends with the probe)."""
    found: list[int] = []

    def probe() -> None:
        tid = threading.get_native_id()
        base = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(base, PACER_NICE))
        except PermissionError:
            found.append(base)
        else:
            found.append(min(base, PACER_NICE))

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return found[0]


@pytest.fixture
async def thread_pacer() -> AsyncIterator[ThreadPacer]:
    pacer = ThreadPacer()
    yield pacer
    thread = pacer.thread
    if thread is not None:  # a failed test left a stream open: do not leak the thread
        await asyncio.to_thread(thread.join, 5)


async def test_the_thread_paces_several_calls_and_ends_with_the_last(
    thread_pacer: ThreadPacer,
) -> None:
    callers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    streams = []
    try:
        for sock in callers:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            stream = await RtpStream.open("127.0.0.1", (42000, 42100), pacer=thread_pacer)
            stream.set_remote(sock.getsockname())
            streams.append(stream)
        thread = thread_pacer.thread
        assert thread is not None and thread.is_alive()
        assert thread is not threading.current_thread()
        for sock in callers:
            packets = await asyncio.to_thread(receive, sock, 10)
            seqs = [p.sequence for p in packets]
            assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(10)]
            steps = {b.timestamp - a.timestamp for a, b in pairwise(packets)}
            assert steps == {160}  # (a stall over 200 ms would show as a larger step)
        # It goes before the process's other threads where the system lets it.
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == expected_pacer_nice()
    finally:
        for stream in streams:
            await stream.close()
        for sock in callers:
            sock.close()
    await asyncio.to_thread(thread.join, 5)  # woken by the last removal, it ends
    assert not thread.is_alive() and thread_pacer.thread is None
    # A call after that starts a new thread.
    again = await RtpStream.open("127.0.0.1", (42000, 42100), pacer=thread_pacer)
    try:
        assert thread_pacer.thread is not None and thread_pacer.thread is not thread
    finally:
        await again.close()


async def test_a_barge_in_cut_matches_the_packets_that_left(
    thread_pacer: ThreadPacer, caller: socket.socket
) -> None:
    stream = await RtpStream.open("127.0.0.1", (42000, 42100), pacer=thread_pacer)
    try:
        stream.set_remote(caller.getsockname())
        stream.play("r1", "i1", 0, b"\x40" * 8000)  # one second of reply
        first = await asyncio.to_thread(receive, caller, 5)
        cut = stream.clear(None)
        assert cut is not None and cut.item_id == "i1"
        # Everything taken before the cut is sent before the first frame of silence after it.
        rest: list[RtpPacket] = []
        while not rest or rest[-1].payload != QUIET:
            rest += await asyncio.to_thread(receive, caller, 1)
        reply = [p for p in first + rest if p.payload == b"\x40" * 160]
        assert len(reply) == len(first + rest) - 1
        assert cut.played_ms == 20 * len(reply)
    finally:
        await stream.close()


async def test_a_reply_that_played_out_is_reported_on_the_event_loop(
    thread_pacer: ThreadPacer, caller: socket.socket
) -> None:
    stream = await RtpStream.open("127.0.0.1", (42000, 42100), pacer=thread_pacer)
    stopped: list[tuple[str, threading.Thread]] = []
    done = asyncio.Event()

    async def on_stopped(response_id: str) -> None:
        stopped.append((response_id, threading.current_thread()))
        done.set()

    try:
        stream.bind(on_stopped)
        stream.set_remote(caller.getsockname())
        stream.play("r1", "i1", 0, b"\x40" * 400)  # 50 ms: three packets
        stream.end("r1")
        async with asyncio.timeout(5):
            await done.wait()
        assert stopped == [("r1", threading.current_thread())]
        packets = await asyncio.to_thread(receive, caller, 3)
        assert b"".join(p.payload for p in packets)[:400] == b"\x40" * 400
    finally:
        await stream.close()
