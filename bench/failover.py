"""Failover time of a relayed session: from the upstream dropping mid-response to the first
audio of the embedded pipeline's answer, as the client receives it.

Three parts on this machine: an upstream voxgate (``voxgate serve``: built-in responder,
espeak-ng), the fault-injecting proxy of the tests (tests/_fault_proxy.py, in this process)
in front of it, and the relaying voxgate under test (``voxgate serve`` with that upstream
behind the proxy, fallback ``local``: built-in responder, espeak-ng). Each run opens a new
session, asks one question, and the proxy cuts the upstream connection (no close frame) right
after the upstream's third ``response.output_audio.delta``; the time counts from that cut (the
proxy's clock) to the client's receipt of the first ``response.output_audio.delta`` of the
fallback's response (same clock: CLOCK_MONOTONIC in one process). Target: p95 ≤ 1 s.

With ``--spoken`` the question is spoken instead (espeak-ng audio appended as a client
streams it, the upstream's turn detection ending the turn) in a session without input
transcription: the fallback must first transcribe the turn with its own speech-to-text
(pocketsphinx here), and that time is part of what is measured.

Usage: ``python bench/failover.py [--runs 20] [--spoken] [--stt whisper]``. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from _realtime import machine, make_speech, voxgate_server
from _speech import log, ms, percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _fault_proxy import FaultProxy  # the tests' proxy, found through the line above

TARGET_P95_S = 1.0
ENGINES = {"VOXGATE_TTS": "espeak", "VOXGATE_STT": "pocketsphinx", "VOXGATE_STT_WORKERS": "1"}
QUESTION = "Tell me about the sea."


async def next_event(ws: ClientConnection, timeout_s: float = 30) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    if event["type"] == "error":
        raise RuntimeError(f"the relaying server sent an error: {event['error']}")
    return event


async def ask(ws: ClientConnection, spoken: bytes | None) -> None:
    """The question, typed, or spoken (then the upstream's turn detection asks the response)."""
    if spoken is None:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": QUESTION}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        return
    audio = bytes(9600) + spoken + bytes(48_000)  # 200 ms of silence before, 1 s after
    for start in range(0, len(audio), 9600):
        chunk = base64.b64encode(audio[start : start + 9600]).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))


async def one_run(url: str, proxy: FaultProxy, spoken: bytes | None) -> float:
    """Seconds from the cut to the fallback's first audio, for one session."""
    struck = len(proxy.faults)
    proxy.drop_after("response.output_audio.delta", 3)
    async with connect(url, max_size=None) as ws:
        assert (await next_event(ws))["type"] == "session.created"
        await ask(ws, spoken)
        cut: str | None = None
        while True:
            event = await next_event(ws)
            if event["type"] == "response.done" and cut is None:
                if event["response"]["status"] != "failed":
                    raise RuntimeError("the upstream finished before the proxy cut it")
                cut = event["response"]["id"]
            elif (
                event["type"] == "response.output_audio.delta"
                and cut is not None
                and event["response_id"] != cut
            ):
                heard = time.monotonic()
                break
    if len(proxy.faults) <= struck:
        raise RuntimeError("the proxy recorded no cut")
    return heard - proxy.faults[struck].at


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--spoken", action="store_true", help="speak the question (no input transcription)"
    )
    parser.add_argument(
        "--stt", choices=["pocketsphinx", "whisper"], default="pocketsphinx", help="VOXGATE_STT"
    )
    args = parser.parse_args()
    engines = {**ENGINES, "VOXGATE_STT": args.stt}
    spoken = (await make_speech([QUESTION]))[0] if args.spoken else None
    async with voxgate_server(None, engines) as upstream_url:
        port = urlsplit(upstream_url).port
        assert port is not None
        with FaultProxy("127.0.0.1", port) as proxy:
            upstreams = [{"name": "upstream", "url": proxy.ws_url, "models": ["gpt-realtime*"]}]
            env = {**engines, "VOXGATE_UPSTREAMS": json.dumps(upstreams)}
            async with voxgate_server(None, env) as relay_url:
                url = f"{relay_url}?model=gpt-realtime"
                await one_run(url, proxy, spoken)  # warm-up: engines loaded, connections made once
                times = []
                for n in range(args.runs):
                    times.append(await one_run(url, proxy, spoken))
                    log(f"run {n + 1}: {times[-1] * 1000:.0f} ms")
    p95 = percentile(times, 95)
    print(
        json.dumps(
            {
                "bench": "failover",
                "runs": len(times),
                "question": "spoken" if args.spoken else "typed",
                "stt": args.stt,
                "drop_to_fallback_first_audio_ms": {
                    "p50": ms(percentile(times, 50)),
                    "p95": ms(p95),
                    "max": ms(max(times)),
                },
                "target_p95_ms": ms(TARGET_P95_S),
                "meets_target": p95 is not None and p95 <= TARGET_P95_S,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
