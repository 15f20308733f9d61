"""What relaying through voxgate adds to an upstream Realtime service: latency per forwarded
event and the relaying server's CPU per session, against connecting to the same upstream
directly, in the same run.

The upstream is a light stand-in (a subprocess of this script: a `websockets` server speaking
the Realtime protocol) that answers every ``input_audio_buffer.append`` at once with a
``response.output_audio.delta`` of the same audio, so what is measured is the path, not the
upstream's work. The relaying server is a fresh ``voxgate serve`` whose upstream is the
stand-in (every model routed to it). For each N of the ladder, N sessions stream microphone
audio in real time (``--chunk-ms`` chunks of 24 kHz PCM16, paced by the clock) for
``--seconds``, first through the relay, then directly.

Each event carries CLOCK_MONOTONIC stamps (shared by all processes on the machine): the
client's send, the stand-in's receipt and reply. Per event and direction, the one-way time is
measured ("up": client → upstream, "down": upstream → client); the relay's added latency per
forwarded event is the relayed percentile minus the direct one, per direction. CPU is the
relaying server's (with its worker processes) during the relayed window, in cores, and per
session. The stand-in and the clients share the machine with the server: on a shared or
small machine the numbers include their contention (``machine`` in the output says how busy
it was). Target: 200 sessions on 2 cores with p99 added ≤ 10 ms.

Usage: ``python bench/relay_overhead.py [--ladder 10,50,100,200] [--seconds 6]``. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from _realtime import free_port, machine, voxgate_server
from _server_usage import cpu_seconds, server_pid
from _speech import log, ms, percentile

TARGET_SESSIONS = 200
TARGET_P99_ADDED_MS = 10.0
RATE = 24000
WARMUP_S = 2.0
SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_standin",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "",
    "tools": [],
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "alloy"},
    },
}


# ---------------------------------------------------------------------------------------------
# The upstream stand-in (run as a subprocess: ``--stand-in PORT``)
# ---------------------------------------------------------------------------------------------


async def _stand_in_session(ws: ServerConnection) -> None:
    created = {"type": "session.created", "event_id": "event_standin0", "session": SESSION}
    await ws.send(json.dumps(created))
    async for message in ws:
        received = time.monotonic()
        event = json.loads(message)
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            stamp = f"d:{event.get('event_id', '')}:{received:.6f}:{time.monotonic():.6f}"
            # event_id first: the client finds its stamps without parsing the audio.
            reply = (
                f'{{"event_id":"{stamp}","type":"response.output_audio.delta",'
                '"response_id":"resp_standin","item_id":"item_standin","output_index":0,'
                f'"content_index":0,"delta":"{event["audio"]}"}}'
            )
            await ws.send(reply)
        elif kind == "session.update":
            updated = {"type": "session.updated", "event_id": "event_u", "session": SESSION}
            await ws.send(json.dumps(updated))


async def stand_in(port: int) -> None:
    async with serve(_stand_in_session, "127.0.0.1", port, compression=None, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


@contextlib.asynccontextmanager
async def stand_in_process() -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--stand-in", str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            await process.stdout.readline()  # "ready"
        yield f"ws://127.0.0.1:{port}/v1/realtime", process.pid
    finally:
        process.terminate()
        await process.wait()


# ---------------------------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------------------------


@dataclass
class Stream:
    up: list[float] = field(default_factory=list)  # seconds, client → upstream
    down: list[float] = field(default_factory=list)  # upstream → client
    sent: int = 0
    late_s: float = 0.0  # how far the microphone fell behind its schedule, at most
    failure: str | None = None


def _stamps(text: str) -> tuple[float, float, float] | None:
    """(client sent, upstream received, upstream replied) from a delta's event_id."""
    start = text.find('"event_id":"d:')
    if start < 0:
        return None
    stamp = text[start + 14 : text.index('"', start + 14)]
    sent, received, replied = stamp.split(":")
    return float(sent), float(received), float(replied)


async def stream_mic(
    url: str, audio_b64: str, chunk_s: float, until: float, measure_from: float, delay: float
) -> Stream:
    result = Stream()
    await asyncio.sleep(delay)  # sessions open one after another, not all in one instant
    try:
        async with connect(
            url + "?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer sk-bench"},
            compression=None,
            max_size=None,
        ) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if created.get("type") != "session.created":
                raise RuntimeError(f"first event {created.get('type')}")

            async def read() -> None:
                async for message in ws:
                    now = time.monotonic()
                    stamps = _stamps(str(message))
                    if stamps is None or stamps[0] < measure_from:
                        continue
                    sent, received, replied = stamps
                    result.up.append(received - sent)
                    result.down.append(now - replied)

            reader = asyncio.create_task(read())
            head = '{"type":"input_audio_buffer.append","event_id":'
            next_at = time.monotonic()
            while next_at < until:
                now = time.monotonic()
                result.late_s = max(result.late_s, now - next_at)
                await ws.send(f'{head}"{now:.6f}","audio":"{audio_b64}"}}')
                result.sent += 1
                next_at += chunk_s
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))  # the mic's pace
            await asyncio.sleep(0.5)  # replies still in flight
            reader.cancel()
    except Exception as exc:  # one failed session is reported, not fatal
        result.failure = f"{type(exc).__name__}: {exc}"
    return result


async def run_level(
    url: str, n: int, seconds: float, chunk_ms: float, server: int | None
) -> dict[str, Any]:
    chunk_s = chunk_ms / 1000
    audio = base64.b64encode(bytes(int(RATE * chunk_s) * 2)).decode("ascii")
    spread = 0.005  # seconds between session starts
    measure_from = time.monotonic() + 1.0 + n * spread + WARMUP_S
    until = measure_from + seconds
    tasks = [
        asyncio.create_task(stream_mic(url, audio, chunk_s, until, measure_from, i * spread))
        for i in range(n)
    ]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu_before = cpu_seconds(server)[1] if server else 0.0
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    cpu_after = cpu_seconds(server)[1] if server else 0.0
    streams = await asyncio.gather(*tasks)
    up = [v for s in streams for v in s.up]
    down = [v for s in streams for v in s.down]
    failures = [s.failure for s in streams if s.failure]
    level: dict[str, Any] = {
        "sessions": n,
        "events_each_way": len(up),
        "up_ms": {"p50": ms(percentile(up, 50)), "p99": ms(percentile(up, 99))},
        "down_ms": {"p50": ms(percentile(down, 50)), "p99": ms(percentile(down, 99))},
        "mic_late_ms_max": ms(max((s.late_s for s in streams), default=0.0)),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
    }
    if server:
        cores = (cpu_after - cpu_before) / seconds
        level["server_cores"] = round(cores, 3)
        level["server_cpu_per_session_pct"] = round(100 * cores / n, 3)
    return level


def added(relay: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for leg in ("up_ms", "down_ms"):
        for q in ("p50", "p99"):
            a, b = relay[leg][q], direct[leg][q]
            out[f"{leg[:-3]}_{q}_ms"] = None if a is None or b is None else round(a - b, 1)
    p99s = [v for k, v in out.items() if k.endswith("p99_ms") and v is not None]
    out["p99_ms"] = max(p99s) if p99s else None
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    ladder = [int(n) for n in args.ladder.split(",")]
    async with stand_in_process() as (upstream_url, _):
        env = {
            "VOXGATE_UPSTREAM_URL": upstream_url,
            "VOXGATE_UPSTREAM_MODELS": "*",
            "VOXGATE_MAX_SESSIONS": str(max(ladder) * 2),
            "VOXGATE_TTS": "espeak",
            "VOXGATE_STT": "pocketsphinx",
            "VOXGATE_STT_WORKERS": "1",
        }
        async with voxgate_server(None, env) as relay_url:
            pid = server_pid()
            levels = []
            for n in ladder:
                log(f"{n} sessions through the relay")
                relayed = await run_level(relay_url, n, args.seconds, args.chunk_ms, pid)
                log(f"{n} sessions directly")
                direct = await run_level(upstream_url, n, args.seconds, args.chunk_ms, None)
                levels.append(
                    {
                        "sessions": n,
                        "relay": relayed,
                        "direct": direct,
                        "added": added(relayed, direct),
                    }
                )
    at_target = next((lv for lv in levels if lv["sessions"] == TARGET_SESSIONS), None)
    met = None
    if at_target is not None:
        p99 = at_target["added"]["p99_ms"]
        met = p99 is not None and p99 <= TARGET_P99_ADDED_MS and not at_target["relay"]["failures"]
    return {
        "benchmark": "relay_overhead",
        "chunk_ms": args.chunk_ms,
        "seconds_per_level": args.seconds,
        "levels": levels,
        "target": {"sessions": TARGET_SESSIONS, "p99_added_ms": TARGET_P99_ADDED_MS, "cores": 2},
        "target_met": met,
        "machine": machine(),
        "note": "stand-in upstream, clients and server share this machine",
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ladder", default="10,50,100,200", help="session counts")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per level")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="microphone chunk size")
    parser.add_argument("--stand-in", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    if options.stand_in is not None:
        asyncio.run(stand_in(options.stand_in))
    else:
        print(json.dumps(asyncio.run(main(options)), indent=2))
