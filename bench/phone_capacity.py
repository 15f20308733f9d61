"""How many concurrent phone calls (G.711 over RTP) voxgate keeps on time, and its CPU per call.

Two processes. The phone side (this script with ``--serve N``, started per level) loads the
embedded engines (built-in responder) and opens N sessions, each served by an `RtpStream`
(μ-law, 20 ms packets) and a headless transport, as the SIP endpoint sets a call up once it
is answered; it prints the RTP ports. The load client (this script) is N callers: each a UDP
socket that sends μ-law speech in real time (20 ms packets, silence between turns), speaks
``--turns`` sentences, and listens to the reply's RTP. Arrival times are the kernel's receive
timestamps (SO_TIMESTAMPNS), so the client's own scheduling does not count against the server.

A level passes when every call:
- receives the server's RTP on time: inter-arrival jitter (|gap - 20 ms|) p99 <= 5 ms and no
  gap over 60 ms, over the whole call;
- hears each reply start (the first packet with sound after the caller stopped speaking)
  within the pipeline's latency target: the end-of-turn silence (server VAD, 500 ms) plus the
  stopped-to-audio p95 target of bench/latency.py (250 ms) plus the phone leg's own delay
  (a 20 ms frame each way and the wait for the pacer's next 20 ms slot; the jitter buffer
  releases in-order audio at once: 100 ms allowed) = 850 ms.

CPU per call: the phone process's CPU time (with its speech-to-text workers, from /proc)
over the talking window, less its idle rate measured before the calls start, divided by N.
A baseline measured first in the same run (one bare RtpStream, no session) shows what
on-time figures the machine allows at all. Prints one JSON object.
Usage: ``python bench/phone_capacity.py [--ladder 4,8,12,16] [--turns 2] [--all]``.
The machine is shared with the clients (and anything else running): say so with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from _realtime import climb, machine, make_speech, parse_ladder
from _server_usage import cpu_seconds
from _speech import SENTENCES, log, ms, percentile
from voxgate.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from voxgate.transports.rtp_wire import RtpPacket, parse_rtp

TARGET_CALLS = 12
FRAME_S = 0.02
SILENCE_MS = 500
JITTER_P99_MS = 5.0
MAX_GAP_MS = 60.0
REPLY_BOUND_MS = SILENCE_MS + 250 + 100
TURN_TIMEOUT_S = 15.0
AUDIBLE = 500  # PCM16 level of a frame with sound in it
ULAW_SILENCE = b"\xff" * 160
# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS): the kernel's receive time of each datagram.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SESSION = {
    "type": "realtime",
    "max_output_tokens": 16,
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS},
            "transcription": {"model": "gpt-4o-mini-transcribe"},
        },
        "output": {"format": {"type": "audio/pcmu"}},
    },
}


# ---------------------------------------------------------------------------------------------
# The phone side (--serve N): sessions behind RTP streams
# ---------------------------------------------------------------------------------------------


async def serve(count: int) -> None:
    from voxgate.engines import tokens
    from voxgate.protocol.connection import RealtimeConnection
    from voxgate.server.engines import start_engines
    from voxgate.session.session import Session, SessionLimits
    from voxgate.settings import Settings
    from voxgate.transports.headless import HeadlessTransport
    from voxgate.transports.rtp import RtpStream

    engines = await start_engines(Settings())
    tokens.load()
    limits = SessionLimits(idle_timeout_s=None, audio_lead_s=60.0)
    streams, sessions, tasks = [], [], []
    for _ in range(count):
        rtp = await RtpStream.open("127.0.0.1", (30000, 39998), "PCMU", 0, 101)
        connection = RealtimeConnection(count_tokens=tokens.count_tokens)
        connection.configure(SESSION)
        session = Session(connection, engines, HeadlessTransport(), limits=limits, playout=rtp)
        rtp.on_audio = lambda audio, s=session, r=rtp: s.track_audio(audio, r.format)
        streams.append(rtp)
        sessions.append(session)
        tasks.append(asyncio.create_task(session.run()))
    print(json.dumps({"ports": [s.local_port for s in streams]}), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the load client closes our stdin
    for session in sessions:
        session.end("bench_done")
    await asyncio.gather(*tasks, return_exceptions=True)
    for rtp in streams:
        await rtp.close()
    await engines.aclose()


# ---------------------------------------------------------------------------------------------
# The load client: callers
# ---------------------------------------------------------------------------------------------


@dataclass
class Caller:
    port: int
    speech: list[bytes]  # μ-law 8 kHz, one per turn
    sock: socket.socket = field(init=False)
    arrivals: list[float] = field(default_factory=list)  # kernel receive times
    speech_ends: list[float] = field(default_factory=list)
    reply_ms: list[float | None] = field(default_factory=list)
    last_loud: float = 0.0
    first_loud_after_speech: float | None = None

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sequence = 0

    def readable(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(2048, 64)
            except BlockingIOError:
                return
            at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("ll", value[:16])
                    at = seconds + nanos / 1e9
            pcm = np.frombuffer(ulaw_to_pcm16(parse_rtp(data).payload), "<i2")
            self.arrivals.append(at)
            if np.abs(pcm.astype(np.int32)).max() > AUDIBLE:
                self.last_loud = at
                ends = self.speech_ends
                if self.first_loud_after_speech is None and ends and at > ends[-1]:
                    self.first_loud_after_speech = at

    def send(self, payload: bytes) -> None:
        packet = RtpPacket(0, self.sequence, self.sequence * 160, 4242, payload)
        self.sequence += 1
        self.sock.sendto(packet.encode(), ("127.0.0.1", self.port))

    async def talk(self, start_at: float) -> None:
        """Silence, then each sentence followed by silence until its reply has played."""
        clock = Pacer(start_at)
        for _ in range(50):
            await clock.tick()
            self.send(ULAW_SILENCE)
        for speech in self.speech:
            for i in range(0, len(speech), 160):
                await clock.tick()
                self.send(speech[i : i + 160].ljust(160, b"\xff"))
            self.first_loud_after_speech = None
            self.speech_ends.append(time.time())
            self.reply_ms.append(await self._reply(clock))

    async def _reply(self, clock: Pacer) -> float | None:
        """Keep the line open (silence) until the reply starts and then falls quiet for a
        second; how long after the end of speech it started."""
        end = self.speech_ends[-1]
        deadline = end + TURN_TIMEOUT_S
        while time.time() < deadline:
            await clock.tick()
            self.send(ULAW_SILENCE)
            started = self.first_loud_after_speech
            if started is not None and time.time() - self.last_loud > 1.0:
                return (started - end) * 1000
        started = self.first_loud_after_speech
        return None if started is None else (started - end) * 1000

    def on_time(self) -> dict[str, Any]:
        gaps = np.diff(np.array(self.arrivals)) * 1000 if len(self.arrivals) > 1 else np.zeros(1)
        jitter = np.abs(gaps - FRAME_S * 1000)
        return {
            "packets": len(self.arrivals),
            "jitter_p99_ms": round(float(np.percentile(jitter, 99)), 2),
            "max_gap_ms": round(float(gaps.max()), 1),
        }


class Pacer:
    """20 ms ticks on the wall clock from ``start``, sleeping between them."""

    def __init__(self, start: float) -> None:
        self.next = start

    async def tick(self) -> None:
        delay = self.next - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.next += FRAME_S


async def run_level(count: int, turns: int, speech: list[bytes]) -> dict[str, Any]:
    log(f"level {count}: starting the phone side")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env["VOXGATE_LOG_LEVEL"] = "warning"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    try:
        async with asyncio.timeout(180):
            ports = json.loads(await child.stdout.readline())["ports"]
        idle0, idle_t0 = cpu_seconds(child.pid)[1], time.monotonic()
        await asyncio.sleep(2.0)  # the idle rate: engines loaded, no call talking
        idle_rate = (cpu_seconds(child.pid)[1] - idle0) / (time.monotonic() - idle_t0)
        callers = [
            Caller(port, [speech[(i + t) % len(speech)] for t in range(turns)])
            for i, port in enumerate(ports)
        ]
        loop = asyncio.get_running_loop()
        for caller in callers:
            loop.add_reader(caller.sock, caller.readable)
        cpu0, t0 = cpu_seconds(child.pid)[1], time.monotonic()
        start = time.time() + 0.5
        stagger = 1.0 / max(count, 1)
        await asyncio.gather(*(c.talk(start + i * stagger) for i, c in enumerate(callers)))
        busy = (cpu_seconds(child.pid)[1] - cpu0) / (time.monotonic() - t0)
        for caller in callers:
            loop.remove_reader(caller.sock)
            caller.sock.close()
    finally:
        child.stdin.close()
        try:
            async with asyncio.timeout(30):
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()
    return judge(count, callers, busy, idle_rate)


def judge(count: int, callers: list[Caller], busy: float, idle_rate: float) -> dict[str, Any]:
    timing = [c.on_time() for c in callers]
    replies = [r for c in callers for r in c.reply_ms]
    heard = [r for r in replies if r is not None]
    checks = {
        "jitter_p99_ms_worst": max(t["jitter_p99_ms"] for t in timing),
        "max_gap_ms_worst": max(t["max_gap_ms"] for t in timing),
        "replies_missing": len(replies) - len(heard),
        "reply_start_ms_p50": ms(percentile([r / 1000 for r in heard], 50)) if heard else None,
        "reply_start_ms_max": round(max(heard), 1) if heard else None,
    }
    passed = (
        checks["jitter_p99_ms_worst"] <= JITTER_P99_MS
        and checks["max_gap_ms_worst"] <= MAX_GAP_MS
        and not checks["replies_missing"]
        and bool(heard)
        and max(heard) <= REPLY_BOUND_MS
    )
    cpu = {
        "phone_process_cores": round(busy, 3),
        "idle_cores": round(idle_rate, 3),
        "per_call_percent_of_a_core": round(100 * (busy - idle_rate) / count, 1),
    }
    return {"sessions": count, "passed": passed, "checks": checks, "cpu": cpu}


async def pacing_baseline(seconds: float = 5.0) -> dict[str, Any]:
    """One bare RtpStream (no session, no engines) sending silence to one listener in this
    process: the on-time figures the machine allows at all, measured in the same run."""
    from voxgate.transports.rtp import RtpStream

    rtp = await RtpStream.open("127.0.0.1", (30000, 39998))
    listener = Caller(0, [])
    rtp.set_remote(listener.sock.getsockname())
    loop = asyncio.get_running_loop()
    loop.add_reader(listener.sock, listener.readable)
    await asyncio.sleep(seconds)  # the measurement window itself
    loop.remove_reader(listener.sock)
    listener.sock.close()
    await rtp.close()
    return listener.on_time()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", default="4,8,12,16", help="call counts, increasing")
    parser.add_argument("--turns", type=int, default=2, help="turns per call (default 2)")
    parser.add_argument("--all", action="store_true", help="go on after a failing level")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        await serve(args.serve)
        return
    ladder = parse_ladder(parser, args.ladder, args.turns)
    baseline = await pacing_baseline()
    log(f"pacing baseline (one bare RTP stream): {json.dumps(baseline)}")
    pcm24k = await make_speech(SENTENCES[:6])
    speech = [pcm16_to_ulaw(resample(p, 24000, 8000)) for p in pcm24k]
    levels, largest = await climb(
        ladder, lambda n: run_level(n, args.turns, speech), keep_going=args.all
    )
    result = {
        "benchmark": "phone_capacity",
        "machine": machine(),
        "targets": {
            "calls": TARGET_CALLS,
            "jitter_p99_ms": JITTER_P99_MS,
            "max_gap_ms": MAX_GAP_MS,
            "reply_start_ms": REPLY_BOUND_MS,
        },
        "pacing_baseline": baseline,
        "levels": levels,
        "largest_passing": largest,
        "target_met": largest >= TARGET_CALLS,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
