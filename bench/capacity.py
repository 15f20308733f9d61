"""How many concurrent voice sessions a voxgate server keeps in real time.

Starts ``voxgate serve`` on a free loopback port (embedded engines, built-in responder) unless
``--url`` names a running server. For each N of a ladder, N sessions connect, each streams a
live microphone (20 ms pcm chunks by a monotonic clock, silence between turns) and speaks a
fixed number of turns, waiting for each spoken reply to finish. A level passes when, in every
session and turn:

- the reply never leaves a client's playout buffer dry for more than 100 ms once it started
  (the client starts playing once 200 ms of audio is in, then each delta plays after the one
  before, or on arrival if that is later);
- the microphone never falls behind its real-time schedule by more than 100 ms;
- speech_stopped arrives within ``--stop-bound-ms`` of the end of speech, the turn is
  transcribed, and the reply completes;
- (reported, not judged) the started server's CPU (cores busy, with its worker processes) and
  resident memory while the level talked, in all and per session;
- replies start promptly: speech_stopped → first audio p95 ≤ ``--reply-p95-ms`` (500 ms) over
  the level's turns (a level that "passes" while answering seconds late is not capacity).

Prints one JSON object: per level the measurements and verdict, the largest N passing (every
level up to it passed), the target and whether it was met. The ladder stops at the first
failing level unless ``--all``. Usage: ``python bench/capacity.py [--ladder 2,4,8,12,16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from _realtime import (
    LoopLag,
    Session,
    Turn,
    add_server_options,
    climb,
    level_failures,
    machine,
    make_speech,
    parse_env,
    parse_ladder,
    playout_stall,
    realtime_session,
    speak_turn,
    spread_ms,
    voxgate_server,
)
from _server_usage import cpu_seconds, rss_mb, server_pid
from _speech import SENTENCES, log, ms, percentile

SILENCE_MS = 500
TURN_DETECTION = {"type": "server_vad", "silence_duration_ms": SILENCE_MS}
TARGET_SESSIONS = 12  # with the embedded speech-to-text on 2 cores
MAX_STALL_MS = 100  # a playout buffer running dry for longer is an audible drop-out
MAX_MIC_LATE_MS = 100
REPLY_P95_MS = 500  # speech_stopped → first audio, over a level's turns
# Conversations are not in lockstep: session starts are spread evenly over about one turn.
STAGGER_SECONDS = 3.0
LEVEL_BUDGET_SECONDS = 120.0  # a hopelessly overloaded level ends here, failed


@dataclass
class SessionRun:
    turns: list[Turn] = field(default_factory=list)
    mic_late: float = 0.0
    failure: str | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", default="2,4,8,12,16", help="session counts, increasing")
    parser.add_argument("--turns", type=int, default=3, help="turns per session (default 3)")
    parser.add_argument("--all", action="store_true", help="go on after a failing level")
    add_server_options(parser, max_output_tokens=20)
    parser.add_argument(
        "--stop-bound-ms", type=float, default=SILENCE_MS + 500,
        help=f"latest speech_stopped after the end of speech (default {SILENCE_MS + 500}: "
        f"the {SILENCE_MS} ms silence plus 500 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--reply-bound-ms", type=float, default=None,
        help="also require every reply to start within this long after speech_stopped "
        "(off by default; the reply start is always reported)",
    )  # fmt: skip
    parser.add_argument(
        "--reply-p95-ms", type=float, default=REPLY_P95_MS,
        help=f"p95 of speech_stopped → first audio a level must stay under ({REPLY_P95_MS})",
    )  # fmt: skip
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between turns (0.5)")
    args = parser.parse_args()
    args.ladder = parse_ladder(parser, args.ladder, args.turns)
    return args


async def converse(
    session: Session, speech: list[bytes], run: SessionRun, args: argparse.Namespace, delay: float
) -> None:
    """Speak each utterance and wait for its reply; turns go into ``run`` as they end, so a
    level cut short by its time budget still reports them."""
    stop_bound = args.stop_bound_ms / 1000
    await asyncio.sleep(delay)
    for pcm in speech:
        # Waiting past the bound tells whether the server was late or never answered.
        turn = await speak_turn(session, pcm, stop_timeout=stop_bound + 5, reply_timeout=30)
        run.turns.append(turn)
        if turn.error is not None or session.failure is not None:
            return
        await asyncio.sleep(args.gap)


async def run_level(
    url: str, n: int, speech: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """N sessions connect first, then all talk at once (starts staggered)."""
    settings = {"max_output_tokens": args.max_output_tokens}
    runs = [SessionRun() for _ in range(n)]
    connected = asyncio.Barrier(n)

    async def one(index: int) -> None:
        run = runs[index]
        try:
            async with realtime_session(url, TURN_DETECTION, settings) as session:
                await connected.wait()
                mine = [speech[(index * args.turns + k) % len(speech)] for k in range(args.turns)]
                try:
                    await converse(session, mine, run, args, delay=index * STAGGER_SECONDS / n)
                finally:
                    run.mic_late = session.mic.max_late
                if session.failure is not None:
                    run.failure = repr(session.failure)
        except asyncio.BrokenBarrierError:
            run.failure = "another session failed to connect"
        except Exception as exc:  # a refused or dropped connection fails the level, no more
            run.failure = f"{type(exc).__name__}: {exc}"
            await connected.abort()  # the others must not wait for this one

    started = time.monotonic()
    async with LoopLag() as lag:
        try:
            async with asyncio.timeout(LEVEL_BUDGET_SECONDS), asyncio.TaskGroup() as group:
                for index in range(n):
                    group.create_task(one(index), name=f"bench-session-{index}")
        except TimeoutError:
            for run in runs:
                run.failure = run.failure or f"level not done within {LEVEL_BUDGET_SECONDS} s"
    return judge_level(n, runs, args, time.monotonic() - started, lag.max_late)


def judge_level(
    n: int, runs: list[SessionRun], args: argparse.Namespace, wall: float, client_lag: float
) -> dict[str, Any]:
    turns = [t for run in runs for t in run.turns]
    done = [t for t in turns if t.error is None and t.done_at is not None]
    end_to_stopped = [v for t in turns if (v := t.since_speech_end(t.stopped_at)) is not None]
    stop_to_audio = [v for t in done if (v := t.stop_to_audio) is not None]
    stall = max((playout_stall(t.audio) for t in done), default=0.0)
    mic_late = max((run.mic_late for run in runs), default=0.0)
    late_stops = sum(1 for v in end_to_stopped if v * 1000 > args.stop_bound_ms)
    failures = level_failures(runs)
    checks = {
        "all_turns_completed": len(done) == n * args.turns and not failures,
        "playout_never_dry": stall * 1000 <= MAX_STALL_MS,
        "mic_on_schedule": mic_late * 1000 <= MAX_MIC_LATE_MS,
        "speech_stopped_in_bound": late_stops == 0 and len(end_to_stopped) == len(turns),
        # A turn the server could not transcribe still gets a reply ("I did not catch any
        # words"): only this event shows the speech-to-text falling behind.
        "all_turns_transcribed": all(t.transcript is not None for t in done),
    }
    if args.reply_bound_ms is not None:
        slowest = max(stop_to_audio, default=0.0)
        checks["reply_started_in_bound"] = slowest * 1000 <= args.reply_bound_ms
    p95 = percentile(stop_to_audio, 95)
    checks["replies_prompt_p95"] = p95 is not None and p95 * 1000 <= args.reply_p95_ms
    return {
        "sessions": n,
        "passed": all(checks.values()),
        "checks": checks,
        "turns_expected": n * args.turns,
        "turns_completed": len(done),
        "failures": failures,
        "transcriptions_failed": sum(1 for t in turns if t.transcription_error is not None),
        "max_playout_stall_ms": ms(stall),
        "max_mic_late_ms": ms(mic_late),
        "end_to_stopped_ms": {**spread_ms(end_to_stopped), "over_bound": late_stops},
        "stopped_to_audio_ms": spread_ms(stop_to_audio),
        "client_loop_max_lag_ms": ms(client_lag),
        "wall_seconds": round(wall, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = await make_speech(SENTENCES)
    async with voxgate_server(args.url, parse_env(args.server_env)) as url:

        pid = server_pid() if args.url is None else None

        async def level(n: int) -> dict[str, Any]:
            log(f"{n} sessions x {args.turns} turns")
            before = cpu_seconds(pid)[1] if pid is not None else 0.0
            started = time.monotonic()
            result = await run_level(url, n, speech, args)
            if pid is not None:  # the server's use while the level talked, per session
                cores = (cpu_seconds(pid)[1] - before) / (time.monotonic() - started)
                memory = rss_mb(pid)
                result["server"] = {
                    "cpu_cores": round(cores, 2),
                    "cpu_cores_per_session": round(cores / n, 3),
                    "rss_mb": round(memory),
                    "rss_mb_per_session": round(memory / n, 1),
                }
            return result

        levels, largest = await climb(args.ladder, level, keep_going=args.all)
    return {
        "benchmark": "capacity",
        "server": args.url or "voxgate serve (embedded engines, built-in responder)",
        "turn_detection": TURN_DETECTION,
        "turns_per_session": args.turns,
        "max_output_tokens": args.max_output_tokens,
        "stagger_seconds": STAGGER_SECONDS,
        "limits": {
            "max_playout_stall_ms": MAX_STALL_MS,
            "max_mic_late_ms": MAX_MIC_LATE_MS,
            "stop_bound_ms": args.stop_bound_ms,
            "reply_bound_ms": args.reply_bound_ms,
        },
        "levels": levels,
        "largest_passing_sessions": largest,
        "targets": {"largest_passing_sessions": TARGET_SESSIONS},
        "met": {"largest_passing_sessions": largest >= TARGET_SESSIONS},
        "all_met": largest >= TARGET_SESSIONS,
        # The client shares the machine with the server: on a small box it takes CPU too.
        "machine": machine(),
    }


def main() -> None:
    args = parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
