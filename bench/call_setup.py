"""How fast a voxgate server answers WebRTC call set-ups that arrive together.

Starts ``voxgate serve`` on a free loopback port (embedded engines) unless ``--url`` names a
running server. Each round, ``--calls`` aiortc peers make their SDP offers first (not timed),
then all POST them to ``/v1/realtime/calls`` at once (raw ``application/sdp``); the answer
time of a call is from sending its request to having the SDP answer. The peers then apply
their answers and wait for the ``oai-events`` channel to open (every call must come up), and
all calls are hung up before the next round. One call before the first round warms the
server up and is not counted; then ``--single`` calls are set up one at a time, for the cost
of one answer with nothing queued before it (reported, not a target).

Prints one JSON object: median and p95 answer time over all rounds, per-round figures, the
time until the channels opened, the target and whether it was met.
Usage: ``python bench/call_setup.py [--calls 20] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from _realtime import machine, parse_env, voxgate_server
from _speech import log, ms, percentile
from voxgate.call.webrtc import WebRTCPeer, hang_up, post_offer

TARGET_P95_MS = 50.0
API_KEY = "sk-bench"
OPEN_TIMEOUT_S = 20.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent set-ups (20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--single", type=int, default=5, help="calls set up one at a time first (5)"
    )
    parser.add_argument("--url", help="benchmark this server (http://HOST:PORT/v1)")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the started server (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    return args


@contextlib.asynccontextmanager
async def server_base(args: argparse.Namespace) -> AsyncIterator[str]:
    """The server's ``http://HOST:PORT/v1``: ``--url``, or a server started for the run."""
    if args.url is not None:
        yield args.url.rstrip("/")
        return
    async with voxgate_server(None, parse_env(args.server_env)) as ws_url:
        yield ws_url.replace("ws://", "http://", 1).removesuffix("/realtime")


@dataclass
class SetUp:
    answer_s: float | None = None
    open_s: float | None = None  # from posting the round's offers to the channel being open
    call_id: str | None = None
    failure: str | None = None


async def post(http: httpx.AsyncClient, base: str, offer: str) -> tuple[SetUp, str | None]:
    """POST one offer; how long the answer took, and the answer."""
    result = SetUp()
    started = time.perf_counter()
    try:
        answer = await post_offer(http, base, offer, api_key=API_KEY)
    except Exception as exc:  # one failed call fails the round, not the benchmark
        result.failure = f"{type(exc).__name__}: {exc}"
        return result, None
    result.answer_s = time.perf_counter() - started
    result.call_id = answer.call_id
    return result, answer.sdp


async def connect(peer: WebRTCPeer, answer: str, result: SetUp, posted_at: float) -> None:
    try:
        await peer.accept_answer(answer)
        await peer.events.wait_open(OPEN_TIMEOUT_S)
        result.open_s = time.perf_counter() - posted_at
    except Exception as exc:
        result.failure = f"{type(exc).__name__}: {exc}"


async def run_round(http: httpx.AsyncClient, base: str, calls: int) -> list[SetUp]:
    """All offers are posted at once; the answers are applied once every one has come, so
    that the peers' own connection work does not delay reading the later answers."""
    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(WebRTCPeer()) for _ in range(calls)]
        offers = [await peer.create_offer() for peer in peers]
        posted_at = time.perf_counter()
        answered = await asyncio.gather(*(post(http, base, offer) for offer in offers))
        results = [result for result, _ in answered]
        await asyncio.gather(
            *(
                connect(peer, sdp, result, posted_at)
                for peer, (result, sdp) in zip(peers, answered, strict=True)
                if sdp is not None
            )
        )
        await asyncio.gather(
            *(hang_up(http, base, r.call_id, api_key=API_KEY) for r in results if r.call_id)
        )
    return results


def summarise(values: list[float]) -> dict[str, float | None]:
    return {
        "min_ms": ms(min(values, default=None)),
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "max_ms": ms(max(values, default=None)),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    answers: list[float] = []
    opens: list[float] = []
    failures: set[str] = set()
    async with (
        server_base(args) as base,
        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=args.calls)) as http,
    ):
        await run_round(http, base, 1)  # warm-up: first imports, first peer connection
        # One call at a time first: the cost of one answer, without the others queued.
        single = [
            r.answer_s
            for _ in range(args.single)
            for r in await run_round(http, base, 1)
            if r.answer_s is not None
        ]
        log(f"one at a time: {json.dumps(summarise(single))}")
        for index in range(args.rounds):
            results = await run_round(http, base, args.calls)
            round_answers = [r.answer_s for r in results if r.answer_s is not None]
            answers += round_answers
            opens += [r.open_s for r in results if r.open_s is not None]
            failures |= {r.failure for r in results if r.failure}
            rounds.append({"round": index + 1, **summarise(round_answers)})
            log(f"round {index + 1}/{args.rounds}: {json.dumps(rounds[-1])}")
            await asyncio.sleep(0.5)  # let the server finish ending the round's calls
    p95 = ms(percentile(answers, 95))
    complete = len(answers) == len(opens) == args.calls * args.rounds and not failures
    return {
        "benchmark": "call_setup",
        "server": args.url or "voxgate serve (embedded engines)",
        "concurrent_calls": args.calls,
        "rounds": args.rounds,
        "answer_ms": summarise(answers),
        "single_call_answer_ms": summarise(single),
        "offer_to_channel_open_ms": summarise(opens),
        "per_round": rounds,
        "calls_answered": len(answers),
        "calls_connected": len(opens),
        "failures": sorted(failures),
        "targets": {"answer_p95_ms": TARGET_P95_MS},
        "met": {"answer_p95_ms": p95 is not None and p95 <= TARGET_P95_MS},
        "all_met": complete and p95 is not None and p95 <= TARGET_P95_MS,
        "machine": machine(),
    }


def main() -> None:
    args = parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
