"""What direct mode adds to setting up a WebRTC call: answer time of ``POST
/v1/realtime/calls`` through voxgate (admission, then the offer forwarded to the upstream,
then the call registered and its sideband started) against posting the same kind of offer to
the upstream directly, in the same run.

Two ``voxgate serve`` processes on loopback: the upstream (its own key, espeak-ng) and the
relaying server, whose one upstream has ``direct = true`` for every model. Calls are set up
one at a time, alternating direct and through voxgate; each call's answer time is from
sending its request to having the SDP answer; every call's data channel must then open (its
media goes to the upstream either way), and it is hung up (through voxgate for the governed
ones, which hangs it up upstream) before the next. One call of each kind warms up first.

Prints one JSON object: answer-time p50/p95 for both paths, the added time (relayed minus
direct, per percentile), the target (added p95 ≤ 50 ms: one loopback HTTP hop and an
admission) and whether it was met.
Usage: ``python bench/direct_setup.py [--calls 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from _realtime import machine, voxgate_server
from _speech import log, ms, percentile
from voxgate.call.webrtc import WebRTCPeer, hang_up, post_offer

TARGET_ADDED_P95_MS = 50.0
UPSTREAM_KEY = "sk-bench-upstream"
OPEN_TIMEOUT_S = 20.0


async def one_call(
    http: httpx.AsyncClient, base: str, key: str, hang_up_base: str, upstream_base: str
) -> float:
    """Set up one call; its answer time in seconds (the call is up and hung up on return).
    Either way the call must be live on the upstream (else the path measured is wrong)."""
    async with WebRTCPeer() as peer:
        offer = await peer.create_offer()
        started = time.perf_counter()
        answer = await post_offer(http, base, offer, api_key=key, model="gpt-realtime")
        answered = time.perf_counter() - started
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open(OPEN_TIMEOUT_S)
        health = (await http.get(upstream_base.removesuffix("/v1") + "/healthz")).json()
        if health["sessions"] != 1:
            raise RuntimeError(f"the call is not on the upstream: {health}")
        status = await hang_up(http, hang_up_base, answer.call_id, api_key=key)
        if status != 200:
            raise RuntimeError(f"hang-up answered {status}")
    return answered


async def run(calls: int) -> dict[str, object]:
    upstream_env = {"VOXGATE_API_KEYS": UPSTREAM_KEY, "VOXGATE_TTS": "espeak"}
    async with voxgate_server(None, upstream_env) as upstream_ws:
        upstream = {
            "name": "upstream",
            "url": upstream_ws,
            "api_key": UPSTREAM_KEY,
            "models": ["*"],
            "direct": True,
        }
        relay_env = {"VOXGATE_UPSTREAMS": json.dumps([upstream])}
        async with voxgate_server(None, relay_env) as relay_ws:
            direct_base = upstream_ws.replace("ws://", "http://").removesuffix("/realtime")
            relay_base = relay_ws.replace("ws://", "http://").removesuffix("/realtime")
            timings: dict[str, list[float]] = {"direct": [], "through_voxgate": []}
            async with httpx.AsyncClient(timeout=30) as http:
                for _ in range(2):  # warm-up, not counted
                    await one_call(http, direct_base, UPSTREAM_KEY, direct_base, direct_base)
                    await one_call(http, relay_base, "sk-any", relay_base, direct_base)
                for i in range(calls):
                    timings["direct"].append(
                        await one_call(http, direct_base, UPSTREAM_KEY, direct_base, direct_base)
                    )
                    timings["through_voxgate"].append(
                        await one_call(http, relay_base, "sk-any", relay_base, direct_base)
                    )
                    log(f"call {i + 1}/{calls}")
    summary = {
        path: {"p50_ms": ms(percentile(values, 50)), "p95_ms": ms(percentile(values, 95))}
        for path, values in timings.items()
    }
    added = {
        f"{q}_ms": round(
            (summary["through_voxgate"][f"{q}_ms"] or 0) - (summary["direct"][f"{q}_ms"] or 0), 1
        )
        for q in ("p50", "p95")
    }
    return {
        "benchmark": "direct_setup",
        "calls_per_path": calls,
        "answer_time": summary,
        "added": added,
        "target": {"added_p95_ms": TARGET_ADDED_P95_MS},
        "met": added["p95_ms"] <= TARGET_ADDED_P95_MS,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per path (20)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.calls)), indent=2))


if __name__ == "__main__":
    main()
