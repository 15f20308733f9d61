"""Voice-turn latency of a voxgate server, measured from a client streaming a live microphone.

Starts ``voxgate serve`` on a free loopback port (embedded engines, built-in responder) unless
``--url`` names a running server, then speaks turns (espeak speech, 20 ms pcm chunks paced by
a monotonic clock, silence in between like an open microphone) once with ``server_vad`` and
once with ``semantic_vad``. For each turn, from the moment the last audible sample was sent:

- ``end_to_stopped``: until ``input_audio_buffer.speech_stopped`` arrives;
- ``end_to_audio``: until the reply's first ``response.output_audio.delta``;
- ``stopped_to_audio``: from speech_stopped to that first delta (the server's answer time).

Each reply is awaited to ``response.done`` before the next turn. Prints one JSON object with
median and p95 per mode, the targets and whether each was met.
Usage: ``python bench/latency.py [--turns 20] [--url ws://…/v1/realtime]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from _realtime import (
    RATE,
    Turn,
    add_server_options,
    machine,
    make_speech,
    parse_env,
    realtime_session,
    speak_turn,
    voxgate_server,
)
from _speech import SENTENCES, log, ms, percentile, silence
from voxgate.engines.wer import word_error_rate

SILENCE_MS = 500
MODES: dict[str, dict[str, Any]] = {
    "server_vad": {"type": "server_vad", "silence_duration_ms": SILENCE_MS},
    "semantic_vad": {"type": "semantic_vad", "eagerness": "auto"},
}
# Targets with the built-in responder on a 2-core machine.
STOPPED_TO_AUDIO_P50_MS = 120
STOPPED_TO_AUDIO_P95_MS = 250
END_TO_AUDIO_P50_MS = SILENCE_MS + 120  # server_vad: the silence itself plus the answer time
# With --mid-pause-ms: semantic_vad may end at most this share of turns at the pause.
PREMATURE_END_RATE = 0.10
# stopped_to_transcript is not a target: it splits stopped_to_audio into the wait for the
# final transcript (which the reply needs) and the rest (language model, first sound).
METRICS = ("end_to_stopped", "end_to_audio", "stopped_to_audio", "stopped_to_transcript")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per mode (default 20)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    add_server_options(parser, max_output_tokens=6)
    parser.add_argument(
        "--gap", type=float, default=0.5, help="seconds of silence after each reply (0.5)"
    )
    parser.add_argument(
        "--mid-pause-ms", type=float, default=0.0,
        help="a pause this long in the middle of every sentence (e.g. 700): measures how "
        "often a turn is ended at the pause (premature end of turn)",
    )  # fmt: skip
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; known: {list(MODES)}")
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    return args


async def make_paused_speech(texts: list[str], pause_ms: float) -> list[bytes]:
    """Each text with a pause in the middle, between two words: "What time does the …
    bank open tomorrow?" The first half rarely sounds finished."""
    halves: list[str] = []
    for text in texts:
        words = text.split()
        halves += [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
    spoken = await make_speech(halves)
    gap = silence(pause_ms / 1000, RATE)
    return [spoken[i] + gap + spoken[i + 1] for i in range(0, len(spoken), 2)]


def script(turns: int) -> list[str]:
    """What is said in each turn: the sentences in order, round again if need be."""
    return [SENTENCES[i % len(SENTENCES)] for i in range(turns)]


async def run_mode(
    url: str, mode: str, speech: list[bytes], max_tokens: int | str, gap: float
) -> list[Turn]:
    turn_detection = MODES[mode]
    turns: list[Turn] = []
    async with realtime_session(url, turn_detection, {"max_output_tokens": max_tokens}) as session:
        await asyncio.sleep(1.0)  # a second of open microphone before the first words
        for index, pcm in enumerate(speech):
            turn = await speak_turn(session, pcm, stop_timeout=10.0, reply_timeout=60.0)
            turns.append(turn)
            log(f"  {mode} turn {index + 1}/{len(speech)}: {describe(turn)}")
            if session.failure is not None:
                log(f"  {mode}: connection failed: {session.failure!r}")
                break
            if turn.error == "no speech_stopped" and not any(t.stopped_at for t in turns):
                log(f"  {mode}: no turn detected at all; giving up on this mode")
                break
            await asyncio.sleep(gap)
    return turns


def describe(turn: Turn) -> str:
    if turn.error:
        return f"FAILED ({turn.error})"
    values = {name: ms(value) for name, value in metrics(turn).items()}
    reply = sum(seconds for _, seconds in turn.audio)
    heard = turn.transcript if turn.transcription_error is None else "(transcription failed)"
    timings = " ".join(f"{k}={v}ms" for k, v in values.items())
    return f"{timings} reply={reply:.1f}s heard={heard!r}"


def metrics(turn: Turn) -> dict[str, float | None]:
    return {
        "end_to_stopped": turn.since_speech_end(turn.stopped_at),
        "end_to_audio": turn.since_speech_end(turn.first_audio_at),
        "stopped_to_audio": turn.stop_to_audio,
        "stopped_to_transcript": (
            None
            if turn.transcript_at is None or turn.stopped_at is None
            else turn.transcript_at - turn.stopped_at
        ),
    }


def summarise(turns: list[Turn], texts: list[str]) -> dict[str, Any]:
    good = [t for t in turns if t.error is None and t.first_audio_at is not None]
    # A mode given up early has fewer turns than texts.
    heard = [
        (text, t.transcript)
        for t, text in zip(turns, texts, strict=False)
        if t.transcript is not None
    ]
    summary: dict[str, Any] = {
        "turns": len(turns),
        "completed": len(good),
        "failures": sorted({t.error for t in turns if t.error}),
        # Turns the detector cut at a pause inside the utterance (then resumed).
        "split_turns": sum(1 for t in turns if t.splits),
        "transcriptions_failed": sum(1 for t in turns if t.transcription_error is not None),
        # What the server heard, scored against what was said (not a target: bench/wer.py).
        "transcript_wer": round(word_error_rate(heard), 3) if heard else None,
    }
    for name in METRICS:
        values = [v for t in good if (v := metrics(t)[name]) is not None]
        summary[name] = {
            "p50_ms": ms(percentile(values, 50)),
            "p95_ms": ms(percentile(values, 95)),
            "max_ms": ms(max(values)) if values else None,
        }
    # Where in the input stream the server put the end of speech, relative to where it was:
    # separates the detector's own hangover from time spent computing.
    offsets = [
        t.stop_audio_end_ms - t.spoken.end_stream_ms
        for t in good
        if t.stop_audio_end_ms is not None
    ]
    offset = percentile(offsets, 50)
    summary["stop_audio_end_offset_p50_ms"] = None if offset is None else round(offset, 1)
    return summary


def judge(
    results: dict[str, dict[str, Any]], *, paused: bool = False
) -> tuple[dict[str, Any], dict[str, bool]]:
    targets: dict[str, Any] = {}
    met: dict[str, bool] = {}

    def check(name: str, value: float | None, limit: float, strict: bool = False) -> None:
        targets[name] = limit
        met[name] = value is not None and (value < limit if strict else value <= limit)

    for mode, summary in results.items():
        met[f"{mode}.all_turns_completed"] = summary["completed"] == summary["turns"] > 0
        check(
            f"{mode}.stopped_to_audio_p50_ms",
            summary["stopped_to_audio"]["p50_ms"],
            STOPPED_TO_AUDIO_P50_MS,
        )
        check(
            f"{mode}.stopped_to_audio_p95_ms",
            summary["stopped_to_audio"]["p95_ms"],
            STOPPED_TO_AUDIO_P95_MS,
        )
    if paused:
        # Only the pause is judged: server_vad ends turns at any pause past its silence.
        if "semantic_vad" in results:
            summary = results["semantic_vad"]
            rate = summary["split_turns"] / summary["turns"] if summary["turns"] else None
            check("semantic_vad.premature_end_rate", rate, PREMATURE_END_RATE)
        return targets, met
    server = results.get("server_vad", {}).get("end_to_audio", {}).get("p50_ms")
    if "server_vad" in results:
        check("server_vad.end_to_audio_p50_ms", server, END_TO_AUDIO_P50_MS)
    if "semantic_vad" in results and server is not None:
        semantic = results["semantic_vad"]["end_to_audio"]["p50_ms"]
        # Complete sentences: the turn model should see the end sooner than a fixed silence.
        check("semantic_vad.end_to_audio_p50_ms_below_server_vad", semantic, server, strict=True)
    return targets, met


async def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = script(args.turns)
    if args.mid_pause_ms:
        speech = await make_paused_speech(texts, args.mid_pause_ms)
    else:
        speech = await make_speech(texts)
    log(f"{len(speech)} utterances, {sum(len(p) for p in speech) / 2 / RATE:.1f} s of speech")
    max_tokens: int | str = args.max_output_tokens
    results: dict[str, dict[str, Any]] = {}
    async with voxgate_server(args.url, parse_env(args.server_env)) as url:
        for mode in args.modes:
            log(f"mode {mode}")
            turns = await run_mode(url, mode, speech, max_tokens, args.gap)
            results[mode] = summarise(turns, texts)
    targets, met = judge(results, paused=bool(args.mid_pause_ms))
    return {
        "benchmark": "latency",
        "server": args.url or "voxgate serve (embedded engines, built-in responder)",
        "turns_per_mode": args.turns,
        "modes": {mode: MODES[mode] for mode in args.modes},
        "max_output_tokens": max_tokens,
        "mid_pause_ms": args.mid_pause_ms or None,
        "results": results,
        "targets": targets,
        "met": met,
        "all_met": all(met.values()),
        "machine": machine(),
    }


def main() -> None:
    args = parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
