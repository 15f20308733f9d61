"""How many concurrent WebRTC calls a voxgate server keeps in real time, and its CPU per call.

Starts ``voxgate serve`` on a free loopback port (embedded engines, built-in responder) in a
subprocess unless ``--url`` names a running server; the clients are aiortc peers in this
process (`voxgate.call.webrtc`). For each N of a ladder, N calls are set up (raw SDP to
``POST /v1/realtime/calls``, session configured on the ``oai-events`` channel), then each
peer's microphone track streams speech in real time (silence between turns) and speaks a
fixed number of turns, waiting each time until the spoken reply has played out
(``output_audio_buffer.stopped``). A level passes when, in every call and turn:

- the reply's audio never stops arriving for more than 100 ms while it plays (frames arrive
  every 20 ms; the server sends silence between replies, so any gap is a drop-out);
- the peer's microphone never falls behind its real-time schedule by more than 100 ms;
- the server kept up with the input: speech_stopped within ``--stop-bound-ms`` of the end of
  speech, the turn committed and transcribed, and the reply audible within
  ``--reply-bound-ms`` of speech_stopped;
- the reply completes and plays out.

While a level talks, the server's CPU time is read from ``/proc/<pid>/stat`` (the server
process alone, and with its worker processes): CPU per call is that over the wall time, less
what the server uses idle, divided by N, in percent of one core. The clients take CPU too:
on a 2-core machine they compete with the server, so for the 2-core target run on a bigger
machine with ``--server-cpus 0,1`` (and the clients elsewhere, e.g. ``taskset -c 2-7``).

Prints one JSON object: per level the measurements and verdict, the largest N passing (every
level up to it passed), the target and whether it was met. The ladder stops at the first
failing level unless ``--all``; each level has a time budget, so the run ends by itself.
Usage: ``python bench/webrtc_capacity.py [--ladder 4,8,12,16,20] [--turns 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from _realtime import (
    LoopLag,
    add_server_options,
    climb,
    level_failures,
    machine,
    make_speech,
    parse_env,
    parse_ladder,
    spread_ms,
    voxgate_server,
)
from _server_usage import cpu_seconds, process_tree, read_dir, server_pid
from _speech import SENTENCES, log, ms
from voxgate.call.webrtc import ServerEvent, WebRTCPeer, hang_up, post_offer

TARGET_SESSIONS = 16  # concurrent WebRTC calls on 2 cores, embedded engines
API_KEY = "sk-bench"
SILENCE_MS = 500
TURN_DETECTION = {"type": "server_vad", "silence_duration_ms": SILENCE_MS}
STT_MODEL = "gpt-4o-mini-transcribe"  # any name: the server uses its own engine
MAX_GAP_MS = 100
MAX_MIC_LATE_MS = 100
STAGGER_SECONDS = 3.0  # call starts spread evenly over about one turn
LEVEL_BUDGET_SECONDS = 120.0
SETUP_TIMEOUT_S = 30.0


# ---------------------------------------------------------------------------------------------
# Options and speech
# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", default="4,8,12,16,20", help="call counts, increasing")
    parser.add_argument("--turns", type=int, default=2, help="turns per call (default 2)")
    parser.add_argument("--all", action="store_true", help="go on after a failing level")
    add_server_options(parser, max_output_tokens=20, url_note=": http://HOST:PORT/v1, no CPU")
    parser.add_argument(
        "--stop-bound-ms", type=float, default=SILENCE_MS + 500,
        help=f"latest speech_stopped after the end of speech (default {SILENCE_MS + 500})",
    )  # fmt: skip
    parser.add_argument(
        "--reply-bound-ms", type=float, default=1500.0,
        help="latest first audible reply frame after speech_stopped (default 1500)",
    )  # fmt: skip
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between turns (0.5)")
    parser.add_argument(
        "--server-cpus", default="", metavar="0,1",
        help="pin the started server (and its workers) to these cpus, e.g. 0,1 for the "
        "2-core target on a bigger machine; clients then best run on others (taskset)",
    )  # fmt: skip
    args = parser.parse_args()
    args.server_cpus = {int(c) for c in args.server_cpus.split(",") if c}
    args.ladder = parse_ladder(parser, args.ladder, args.turns)
    return args


# ---------------------------------------------------------------------------------------------
# The server and its CPU
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server_base(args: argparse.Namespace) -> AsyncIterator[tuple[str, int | None]]:
    """The server's ``http://HOST:PORT/v1`` and, when started here, its pid."""
    if args.url is not None:
        yield args.url.rstrip("/"), None
        return
    async with voxgate_server(None, parse_env(args.server_env)) as ws_url:
        base = ws_url.replace("ws://", "http://", 1).removesuffix("/realtime")
        pid = server_pid()
        if pid is not None and args.server_cpus:
            pin(pid, args.server_cpus)
        yield base, pid


def pin(pid: int, cpus: set[int]) -> None:
    """Keep ``pid`` and its descendants, every thread of them, on ``cpus``: "2 cores" on a
    bigger machine. Threads started later inherit it."""
    tree = process_tree(pid)
    for process in tree:
        threads = read_dir(f"/proc/{process}/task")
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
                os.sched_setaffinity(int(tid), cpus)
    log(f"server pinned to cpus {sorted(cpus)} ({len(tree)} processes)")


# ---------------------------------------------------------------------------------------------
# One call, one turn
# ---------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One utterance and the reply to it; times are ``time.monotonic``."""

    spoken_at: float
    stopped_at: float | None = None
    item_id: str | None = None
    committed: bool = False
    transcribed: bool = False
    response_id: str | None = None
    playing_at: float | None = None
    done_status: str | None = None
    played_at: float | None = None
    first_audible_at: float | None = None
    max_gap: float = 0.0
    splits: int = 0
    error: str | None = None

    @property
    def stop_after_speech(self) -> float | None:
        return None if self.stopped_at is None else self.stopped_at - self.spoken_at

    @property
    def reply_after_stop(self) -> float | None:
        if self.first_audible_at is None or self.stopped_at is None:
            return None
        return self.first_audible_at - self.stopped_at


def follow(turn: Turn, event: ServerEvent) -> None:
    data = event.data
    match event.type:
        case "input_audio_buffer.speech_started":
            if turn.stopped_at is not None:
                turn.splits += 1
            # What follows belongs to the new speech, not to the part before the pause.
            turn.stopped_at = turn.item_id = turn.response_id = turn.playing_at = None
            turn.committed = turn.transcribed = False
        case "input_audio_buffer.speech_stopped":
            turn.stopped_at, turn.item_id = event.at, data.get("item_id")
        case "input_audio_buffer.committed" if data.get("item_id") == turn.item_id:
            turn.committed = True
        case "conversation.item.input_audio_transcription.completed" if (
            data.get("item_id") == turn.item_id
        ):
            turn.transcribed = True
        case "response.created" if turn.stopped_at is not None:
            turn.response_id = data["response"]["id"]
        case "output_audio_buffer.started" if data.get("response_id") == turn.response_id:
            turn.playing_at = event.at
        case "response.done" if data["response"]["id"] == turn.response_id:
            turn.done_status = data["response"].get("status")
            # "incomplete" is a reply cut at max_output_tokens: it still plays out.
            if turn.done_status not in ("completed", "incomplete"):
                turn.error = f"reply {turn.done_status}"
        case "output_audio_buffer.stopped" if data.get("response_id") == turn.response_id:
            turn.played_at = event.at
        case "output_audio_buffer.cleared" if data.get("response_id") == turn.response_id:
            turn.error = "reply cleared"
        case "error":
            turn.error = str(data.get("error", {}).get("message"))
        case _:
            pass


async def speak_turn(peer: WebRTCPeer, pcm: bytes, args: argparse.Namespace) -> Turn:
    """Say ``pcm``; follow the channel's events until the reply to it has played out."""
    turn = Turn((await peer.say(pcm)).at)
    stop_deadline = turn.spoken_at + args.stop_bound_ms / 1000 + 5
    while turn.played_at is None and turn.error is None:
        waiting_for_stop = turn.stopped_at is None
        left = stop_deadline - time.monotonic() if waiting_for_stop else 30.0
        try:
            follow(turn, await peer.events.next(timeout_s=max(left, 0.0)))
        except TimeoutError:
            turn.error = "no speech_stopped" if waiting_for_stop else "reply did not play out"
    if turn.stopped_at is not None and (audible := peer.audio.first_audible(turn.stopped_at)):
        turn.first_audible_at = audible.at
    if turn.playing_at is not None and turn.played_at is not None:
        turn.max_gap = peer.audio.max_gap(turn.playing_at, turn.played_at)
    return turn


@dataclass
class CallRun:
    turns: list[Turn] = field(default_factory=list)
    mic_late: float = 0.0
    failure: str | None = None


async def set_up(
    peer: WebRTCPeer, http: httpx.AsyncClient, base: str, args: argparse.Namespace
) -> str:
    """Connect ``peer`` as a new call and configure its session; the call id."""
    answer = await post_offer(http, base, await peer.create_offer(), api_key=API_KEY)
    await peer.accept_answer(answer.sdp)
    await peer.events.wait_open(SETUP_TIMEOUT_S)
    await peer.events.until("session.created", timeout_s=SETUP_TIMEOUT_S)
    audio = {"input": {"turn_detection": TURN_DETECTION, "transcription": {"model": STT_MODEL}}}
    session = {"type": "realtime", "audio": audio, "max_output_tokens": args.max_output_tokens}
    peer.send({"type": "session.update", "session": session})
    await peer.events.until("session.updated", timeout_s=SETUP_TIMEOUT_S)
    return answer.call_id


async def converse(
    peer: WebRTCPeer, speech: list[bytes], run: CallRun, args: argparse.Namespace
) -> None:
    """Speak each utterance and wait for its reply; turns go into ``run`` as they end."""
    for pcm in speech:
        turn = await speak_turn(peer, pcm, args)
        run.turns.append(turn)
        if turn.error is not None:
            return
        await asyncio.sleep(args.gap)


# ---------------------------------------------------------------------------------------------
# A level
# ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    http: httpx.AsyncClient
    base: str  # http://HOST:PORT/v1
    pid: int | None  # None: not started here, no CPU figures
    idle: tuple[float, float]  # % of a core with no calls: alone, and with its workers


async def run_level(
    server: Server, n: int, speech: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """N calls are set up first, then all talk at once (starts staggered)."""
    http, base = server.http, server.base
    runs = [CallRun() for _ in range(n)]
    ready = asyncio.Barrier(n + 1)  # the calls, and the CPU meter

    async def one(index: int) -> None:
        run, call_id = runs[index], None
        try:
            async with WebRTCPeer() as peer:
                try:
                    call_id = await set_up(peer, http, base, args)
                    await ready.wait()
                    await asyncio.sleep(index * STAGGER_SECONDS / n)
                    mine = [
                        speech[(index * args.turns + k) % len(speech)] for k in range(args.turns)
                    ]
                    await converse(peer, mine, run, args)
                finally:
                    run.mic_late = peer.microphone.max_late
                    if call_id is not None:
                        await hang_up(http, base, call_id, api_key=API_KEY)
        except asyncio.BrokenBarrierError:
            run.failure = "another call failed to set up"
        except Exception as exc:  # a refused or dropped call fails the level, no more
            run.failure = f"{type(exc).__name__}: {exc}"
            await ready.abort()  # the others must not wait for this one

    meter = CpuMeter(server.pid, server.idle)
    async with LoopLag() as lag:
        try:
            async with asyncio.timeout(LEVEL_BUDGET_SECONDS), asyncio.TaskGroup() as group:
                for index in range(n):
                    group.create_task(one(index), name=f"bench-call-{index}")
                with contextlib.suppress(asyncio.BrokenBarrierError):
                    await ready.wait()
                    meter.start()
        except TimeoutError:
            for run in runs:
                run.failure = run.failure or f"level not done within {LEVEL_BUDGET_SECONDS} s"
        finally:
            meter.stop()
    return judge_level(n, runs, args, meter.report(n), lag.max_late)


class CpuMeter:
    """Server CPU, in percent of one core, between ``start`` and ``stop``; per call, the
    server's use while idle (``idle``, measured before the ladder) is taken off first."""

    def __init__(self, pid: int | None, idle: tuple[float, float] = (0.0, 0.0)) -> None:
        self._pid = pid
        self._idle = idle
        self._start: tuple[float, float, float, float] | None = None
        self._stop: tuple[float, float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float, float]:
        own, tree = cpu_seconds(self._pid) if self._pid is not None else (0.0, 0.0)
        times = os.times()
        return time.monotonic(), own, tree, times.user + times.system

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        if self._start is not None and self._stop is None:
            self._stop = self._sample()

    def percent(self) -> tuple[float, float, float, float]:
        """Seconds measured; server, server with workers and client CPU in % of a core."""
        if self._start is None or self._stop is None:
            return 0.0, 0.0, 0.0, 0.0
        wall, own, tree, client = (b - a for a, b in zip(self._start, self._stop, strict=True))
        return wall, 100 * own / wall, 100 * tree / wall, 100 * client / wall

    def report(self, n: int) -> dict[str, Any]:
        wall, own, tree, client = self.percent()
        if wall == 0:
            return {}
        report: dict[str, Any] = {"talk_seconds": round(wall, 1)}
        if self._pid is not None:
            report |= {
                "server_cores_pct": round(own, 1),
                "server_with_workers_cores_pct": round(tree, 1),
                "server_per_call_pct": round((own - self._idle[0]) / n, 2),
                "server_with_workers_per_call_pct": round((tree - self._idle[1]) / n, 2),
            }
        return report | {"client_cores_pct": round(client, 1)}


async def idle_load(pid: int | None, seconds: float = 3.0) -> tuple[float, float]:
    """The server's CPU with no calls (% of a core): alone, and with its workers."""
    meter = CpuMeter(pid)
    meter.start()
    await asyncio.sleep(seconds)
    meter.stop()
    _, own, tree, _ = meter.percent()
    return own, tree


def judge_level(
    n: int, runs: list[CallRun], args: argparse.Namespace, cpu: dict[str, Any], client_lag: float
) -> dict[str, Any]:
    turns = [t for run in runs for t in run.turns]
    done = [t for t in turns if t.error is None and t.played_at is not None]
    stops = [v for t in turns if (v := t.stop_after_speech) is not None]
    replies = [v for t in done if (v := t.reply_after_stop) is not None]
    gap = max((t.max_gap for t in done), default=0.0)
    mic_late = max((run.mic_late for run in runs), default=0.0)
    failures = level_failures(runs)
    checks = {
        "all_turns_completed": len(done) == n * args.turns and not failures,
        "reply_audio_never_gapped": gap * 1000 <= MAX_GAP_MS,
        "mic_on_schedule": mic_late * 1000 <= MAX_MIC_LATE_MS,
        "speech_stopped_in_bound": len(stops) == len(turns)
        and all(v * 1000 <= args.stop_bound_ms for v in stops),
        "all_turns_committed_and_transcribed": all(t.committed and t.transcribed for t in done),
        "reply_started_in_bound": len(replies) == len(done)
        and all(v * 1000 <= args.reply_bound_ms for v in replies),
    }
    return {
        "sessions": n,
        "passed": all(checks.values()),
        "checks": checks,
        "turns_expected": n * args.turns,
        "turns_completed": len(done),
        "failures": failures,
        "max_reply_gap_ms": ms(gap),
        "max_mic_late_ms": ms(mic_late),
        "end_to_stopped_ms": spread_ms(stops),
        "stopped_to_audible_ms": spread_ms(replies),
        "split_turns": sum(1 for t in turns if t.splits),
        "cpu": cpu,
        "client_loop_max_lag_ms": ms(client_lag),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = await make_speech(SENTENCES)
    async with (
        server_base(args) as (base, pid),
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http,
    ):
        idle = await idle_load(pid)
        log(f"server idle: {idle[0]:.1f}% of a core, {idle[1]:.1f}% with its workers")
        server = Server(http, base, pid, idle)

        async def level(n: int) -> dict[str, Any]:
            log(f"{n} WebRTC calls x {args.turns} turns")
            return await run_level(server, n, speech, args)

        levels, largest = await climb(args.ladder, level, keep_going=args.all)
    return {
        "benchmark": "webrtc_capacity",
        "server": args.url or "voxgate serve (embedded engines, built-in responder)",
        "turn_detection": TURN_DETECTION,
        "turns_per_call": args.turns,
        "max_output_tokens": args.max_output_tokens,
        "stagger_seconds": STAGGER_SECONDS,
        "limits": {
            "max_reply_gap_ms": MAX_GAP_MS,
            "max_mic_late_ms": MAX_MIC_LATE_MS,
            "stop_bound_ms": args.stop_bound_ms,
            "reply_bound_ms": args.reply_bound_ms,
            "level_budget_seconds": LEVEL_BUDGET_SECONDS,
        },
        "server_idle_cores_pct": {"server": round(idle[0], 1), "with_workers": round(idle[1], 1)},
        "levels": levels,
        "largest_passing_sessions": largest,
        "targets": {"largest_passing_sessions": TARGET_SESSIONS, "cpus": 2},
        "met": {"largest_passing_sessions": largest >= TARGET_SESSIONS},
        "all_met": largest >= TARGET_SESSIONS,
        # The clients share the machine with the server: on a small box they take CPU too.
        "machine": {
            **machine(),
            "server_cpus": sorted(args.server_cpus) or "all",
            "client_cpus": sorted(os.sched_getaffinity(0)),
        },
    }


def main() -> None:
    args = parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
