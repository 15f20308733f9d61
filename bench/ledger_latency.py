"""Does the usage ledger slow replies? End of speech → first reply audio, ledger on vs off.

Starts two ``voxgate serve`` processes side by side (embedded engines, built-in responder,
SQLite ledger in a temporary data directory): one with the ledger on (the default), one with
``VOXGATE_LEDGER=false``. Speaks the same turns to each (``server_vad``), alternating blocks
so that drift in the machine's load falls on both alike. Per side: median and p95 of
``end_to_audio`` (last audible sample sent → first ``response.output_audio.delta``) and of
``stopped_to_audio`` (``speech_stopped`` → first delta, the server's own answer time), and,
for information, ``last_audio_to_done`` (last audio delta → ``response.done``: where the
ledger's write shows, since ``response.done`` waits for it).

The ledger writes each usage row before ``response.done`` goes out, after the audio; the
target is that the medians stay within noise. "Within noise" is the box-plot notch test: two
medians differ only if |m1 - m2| > 1.58 (IQR1 / sqrt(n1) + IQR2 / sqrt(n2)), their
approximate 95 % confidence intervals not overlapping (McGill, Tukey & Larsen 1978).
Usage: ``python bench/ledger_latency.py [--turns 20] [--blocks 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from _realtime import RATE, Turn, machine, make_speech, voxgate_server
from _speech import log, ms, percentile
from latency import run_mode, script

NOTCH = 1.58
SIDES = {"ledger_on": {"VOXGATE_LEDGER": "true"}, "ledger_off": {"VOXGATE_LEDGER": "false"}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per side (default 20)")
    parser.add_argument("--blocks", type=int, default=2, help="alternating blocks per side")
    parser.add_argument("--max-output-tokens", type=int, default=6)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds after each reply")
    args = parser.parse_args()
    if args.turns < args.blocks or args.blocks < 1:
        parser.error("--turns must be at least --blocks, and --blocks at least 1")
    return args


def stats(turns: list[Turn]) -> dict[str, Any]:
    good = [t for t in turns if t.error is None and t.first_audio_at is not None]
    out: dict[str, Any] = {"turns": len(turns), "completed": len(good)}
    for name, values in (
        ("end_to_audio", [t.since_speech_end(t.first_audio_at) for t in good]),
        ("stopped_to_audio", [t.stop_to_audio for t in good]),
        # Not a target: what holding response.done for the usage row costs it.
        ("last_audio_to_done", [t.done_at - t.audio[-1][0] for t in good if t.done_at]),
    ):
        clean = [v for v in values if v is not None]
        q1, q3 = percentile(clean, 25), percentile(clean, 75)
        out[name] = {
            "p50_ms": ms(percentile(clean, 50)),
            "p95_ms": ms(percentile(clean, 95)),
            # Half-width of the median's notch: NOTCH * IQR / sqrt(n).
            "notch_ms": ms(NOTCH * (q3 - q1) / len(clean) ** 0.5) if q1 is not None else None,
            "all_ms": [ms(v) for v in clean],
        }
    return out


def within_noise(results: dict[str, Any], metric: str) -> tuple[bool, float | None]:
    """Whether the two sides' medians of ``metric`` are within their notches; the gap."""
    on, off = results["ledger_on"][metric], results["ledger_off"][metric]
    if None in (on["p50_ms"], off["p50_ms"], on["notch_ms"], off["notch_ms"]):
        return False, None
    gap = on["p50_ms"] - off["p50_ms"]
    return abs(gap) <= on["notch_ms"] + off["notch_ms"], round(gap, 1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = script(args.turns)
    speech = await make_speech(texts)
    log(f"{len(speech)} utterances, {sum(len(p) for p in speech) / 2 / RATE:.1f} s of speech")
    size = -(-len(speech) // args.blocks)
    blocks = [speech[i : i + size] for i in range(0, len(speech), size)]
    turns: dict[str, list[Turn]] = {side: [] for side in SIDES}
    async with contextlib.AsyncExitStack() as stack:
        urls = {
            side: await stack.enter_async_context(voxgate_server(None, env))
            for side, env in SIDES.items()
        }
        for index, block in enumerate(blocks):
            for side in SIDES if index % 2 == 0 else reversed(list(SIDES)):
                log(f"block {index + 1}/{len(blocks)}: {side}")
                turns[side] += await run_mode(
                    urls[side], "server_vad", block, args.max_output_tokens, args.gap
                )
    results = {side: stats(t) for side, t in turns.items()}
    met = {"all_turns_completed": all(r["completed"] == r["turns"] > 0 for r in results.values())}
    gaps = {}
    for metric in ("end_to_audio", "stopped_to_audio"):
        met[f"{metric}_p50_within_noise"], gaps[metric] = within_noise(results, metric)
    return {
        "benchmark": "ledger_latency",
        "server": "voxgate serve x2 (embedded engines, built-in responder, SQLite ledger)",
        "turns_per_side": args.turns,
        "results": results,
        "p50_on_minus_off_ms": gaps,
        "targets": {"p50_on_minus_off": "within the sum of both notches"},
        "met": met,
        "all_met": all(met.values()),
        "machine": machine(),
    }


def main() -> None:
    print(json.dumps(asyncio.run(run(parse_args())), indent=2))


if __name__ == "__main__":
    main()
