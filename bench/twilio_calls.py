"""How many concurrent Twilio Media Streams calls a voxgate server keeps in real time, how
soon each reply starts, and its CPU per call.

Starts ``voxgate serve`` on a free loopback port (embedded engines, built-in responder,
``[twilio]`` configured) in a subprocess. For each N of a ladder, N calls come in as Twilio
places them: the signed voice webhook (``POST /v1/twilio/voice``), then the media stream its
TwiML names, speaking Twilio's protocol from this process: the caller's line sends 20 ms
μ-law frames in real time (speech, silence between turns), and reply audio is played as a
phone plays it — from a buffer, in real time, each mark echoed once the audio before it has
played. A level passes when, in every call and turn:

- the reply starts (its first frame arrives) within ``--reply-bound-ms`` of the end of the
  caller's speech (the server's turn detection waits 500 ms of silence first);
- the reply never stalls: played from the moment its first frame arrived, no frame arrives
  more than ``--max-stall-ms`` after it was due (a phone would have a gap);
- the caller's line never falls behind its real-time schedule by more than 100 ms (else the
  client, not the server, is the bottleneck).

CPU per call: the server process's CPU (with and without its worker processes) over the
talking time, less its idle use, over N, in percent of one core. The clients share the
machine: on 2 cores they compete with the server.

Prints one JSON object: per level the measurements and verdict, the largest N passing, the
target and whether it was met. Usage: ``python bench/twilio_calls.py [--ladder 4,8,12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from _realtime import climb, machine, make_speech, parse_ladder, voxgate_server
from _server_usage import server_pid
from _speech import SENTENCES, log, ms, percentile
from voxgate.audio import resample
from voxgate.audio.g711 import pcm16_to_ulaw
from webrtc_capacity import CpuMeter, idle_load

TARGET_CALLS = 12  # concurrent phone calls on 2 cores (issue: telephony)
API_KEY = "sk-bench"
AUTH_TOKEN = "bench-twilio-auth-token"
FRAME_S = 0.02
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES
SESSION = {
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}},
}
# No new audio this long after all has played: the reply is over (longer than any pause
# within a reply, so a stall inside one is measured, not taken for its end).
QUIET_AFTER_REPLY_S = 3.0
LEVEL_BUDGET_S = 150.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", default="4,8,12,16", help="call counts, increasing")
    parser.add_argument("--turns", type=int, default=2, help="turns per call (default 2)")
    parser.add_argument("--max-output-tokens", type=int, default=16, help="reply length cap")
    parser.add_argument("--reply-bound-ms", type=float, default=2000.0)
    parser.add_argument("--max-stall-ms", type=float, default=60.0)
    parser.add_argument("--all", action="store_true", help="go on after a failing level")
    args = parser.parse_args()
    args.ladder = parse_ladder(parser, args.ladder, args.turns)
    return args


@dataclass
class Turn:
    speech_end: float
    first_frame: float | None = None
    frames: int = 0
    max_stall: float = 0.0


@dataclass
class Call:
    """One call from Twilio's side: the line, the player, the marks."""

    ws: ClientConnection
    stream_sid: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))
    speech: bytearray = field(default_factory=bytearray)
    speech_end: asyncio.Future[float] | None = None
    turns: list[Turn] = field(default_factory=list)
    buffer: bytearray = field(default_factory=bytearray)
    received: int = 0
    played: int = 0
    marks: list[tuple[str, int]] = field(default_factory=list)
    play_clock: float = 0.0  # when the last received frame plays
    last_audio: float = 0.0
    line_late: float = 0.0
    seq: int = 0

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        message = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.stream_sid}
        await self.ws.send(json.dumps(message | body))

    async def line(self, started: float) -> None:
        chunk = 0
        while True:
            frame = bytes(self.speech[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
            was_speaking = bool(self.speech)
            del self.speech[:FRAME_BYTES]
            chunk += 1
            media = {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20)}
            media["payload"] = base64.b64encode(frame).decode()
            await self.send("media", media=media)
            now = time.monotonic()
            if was_speaking and not self.speech and self.speech_end and not self.speech_end.done():
                self.speech_end.set_result(now)
            due = started + chunk * FRAME_S
            self.line_late = max(self.line_late, now - due)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def listen(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            now = time.monotonic()
            match message["event"]:
                case "media":
                    self.received += len(base64.b64decode(message["media"]["payload"]))
                    self.on_frame(now)
                case "mark":
                    self.marks.append((message["mark"]["name"], self.received))
                case "clear":
                    self.played = self.received
                    for name, _ in self.marks:
                        await self.send("mark", mark={"name": name})
                    self.marks.clear()

    def on_frame(self, now: float) -> None:
        """A phone's playout: a frame plays right after the one before it, or on arrival if
        that one has finished (a stall: the caller hears a gap)."""
        turn = self.turns[-1] if self.turns else None  # None: the disclosure
        if turn is not None and turn.first_frame is None:
            turn.first_frame = now
        elif turn is not None:
            turn.max_stall = max(turn.max_stall, now - self.play_clock)
        if turn is not None:
            turn.frames += 1
        self.play_clock = max(self.play_clock, now) + FRAME_S
        self.last_audio = now

    def quiet_for(self, seconds: float) -> bool:
        """Nothing has played or arrived for ``seconds``."""
        return time.monotonic() - max(self.last_audio, self.play_clock) > seconds

    async def echo_marks(self) -> None:
        """Echo each mark once the audio before it has played (by the play clock)."""
        while True:
            now = time.monotonic()
            playing_until = self.received - max(0.0, self.play_clock - now) / FRAME_S * 160
            while self.marks and self.marks[0][1] <= playing_until + 1e-6:
                name, _ = self.marks.pop(0)
                await self.send("mark", mark={"name": name})
            await asyncio.sleep(FRAME_S)


async def place_call(http: httpx.AsyncClient, base: str, speech: list[bytes]) -> Call:
    """The webhook, the TwiML, the stream; then the turns. The call with what it measured."""
    call_sid = "CA" + secrets.token_hex(16)
    url = f"{base}/twilio/voice"
    params = {"CallSid": call_sid, "AccountSid": "AC" + secrets.token_hex(16), "From": "+1555"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    answer = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    answer.raise_for_status()
    stream = ElementTree.fromstring(answer.text).find("./Connect/Stream")
    assert stream is not None, answer.text
    custom = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    async with connect(stream.get("url", "")) as ws:
        call = Call(ws)
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        start = {"streamSid": call.stream_sid, "callSid": call_sid, "accountSid": "AC1"}
        start |= {"tracks": ["inbound"], "mediaFormat": fmt, "customParameters": custom}
        await call.send("start", start=start)
        tasks = [
            asyncio.create_task(work)
            for work in (call.line(time.monotonic()), call.listen(), call.echo_marks())
        ]
        try:
            await opening_played(call)
            for ulaw in speech:
                await talk(call, ulaw)
            await call.send("stop", stop={"callSid": call_sid})
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return call


async def opening_played(call: Call) -> None:
    """The call opens with the disclosure; the caller speaks once it has played."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the measuring loop, as in `talk`
        if call.received and call.quiet_for(1.0):
            return
    raise TimeoutError("the call's opening disclosure did not play within 30 s")


async def talk(call: Call, ulaw: bytes) -> None:
    """Say one sentence; return once its reply has played out."""
    call.speech_end = asyncio.get_running_loop().create_future()
    call.speech += ulaw
    call.turns.append(Turn(await call.speech_end))
    turn = call.turns[-1]
    deadline = turn.speech_end + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the measuring loop: no event marks "the reply is over"
        if turn.first_frame and call.quiet_for(QUIET_AFTER_REPLY_S):
            return


async def run_level(
    http: httpx.AsyncClient, base: str, pid: int | None, idle: tuple[float, float],
    n: int, speech: list[bytes], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    meter = CpuMeter(pid, idle)
    meter.start()

    async def one(index: int) -> Call:
        await asyncio.sleep(index * 2.0 / n)  # arrivals spread over two seconds
        mine = [speech[(index * args.turns + k) % len(speech)] for k in range(args.turns)]
        return await place_call(http, base, mine)

    try:
        async with asyncio.timeout(LEVEL_BUDGET_S):
            calls = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    finally:
        meter.stop()
    failures = sorted({f"{type(c).__name__}: {c}" for c in calls if isinstance(c, BaseException)})
    turns = [t for c in calls if isinstance(c, Call) for t in c.turns]
    answered = [t for t in turns if t.first_frame is not None]
    starts = [t.first_frame - t.speech_end for t in answered if t.first_frame is not None]
    stall = max((t.max_stall for t in answered), default=0.0)
    line_late = max((c.line_late for c in calls if isinstance(c, Call)), default=0.0)
    checks = {
        "all_turns_answered": not failures and len(answered) == n * args.turns,
        "replies_started_in_bound": all(s * 1000 <= args.reply_bound_ms for s in starts),
        "replies_never_stalled": stall * 1000 <= args.max_stall_ms,
        "caller_lines_on_schedule": line_late * 1000 <= 100,
    }
    return {
        "sessions": n,
        "passed": all(checks.values()),
        "checks": checks,
        "failures": failures,
        "speech_end_to_first_reply_frame_ms": {
            "p50": ms(percentile(starts, 50)),
            "p95": ms(percentile(starts, 95)),
            "max": ms(max(starts, default=None)),
        },
        "max_reply_stall_ms": ms(stall),
        "reply_frames_per_turn_p50": percentile([t.frames for t in answered], 50),
        "max_line_late_ms": ms(line_late),
        "cpu": meter.report(n),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = [
        SILENCE * 25 + pcm16_to_ulaw(resample(pcm, 24000, 8000))
        for pcm in await make_speech(SENTENCES)
    ]
    twilio = {
        "auth_token": AUTH_TOKEN,
        "key": API_KEY,
        "session": SESSION | {"max_output_tokens": args.max_output_tokens},
    }
    env = {"VOXGATE_API_KEYS": API_KEY, "VOXGATE_TWILIO": json.dumps(twilio)}
    async with (
        voxgate_server(None, env) as ws_url,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http,
    ):
        base = ws_url.replace("ws://", "http://", 1).removesuffix("/realtime")
        pid = server_pid()
        idle = await idle_load(pid)
        log(f"server idle: {idle[0]:.1f}% of a core, {idle[1]:.1f}% with its workers")

        async def level(n: int) -> dict[str, Any]:
            log(f"{n} Twilio calls x {args.turns} turns")
            return await run_level(http, base, pid, idle, n, speech, args)

        levels, largest = await climb(args.ladder, level, keep_going=args.all)
    return {
        "benchmark": "twilio_calls",
        "server": "voxgate serve (embedded engines, built-in responder)",
        "turns_per_call": args.turns,
        "max_output_tokens": args.max_output_tokens,
        "levels": levels,
        "largest_passing_calls": largest,
        "target_calls": TARGET_CALLS,
        "target_met": largest >= TARGET_CALLS,
        "machine": machine(),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(parse_args())), indent=2))
