"""Does memory come back after a burst? The server's RSS before a burst of heavy sessions and
after they have all closed (target: back within 10 % of the start).

Starts ``voxgate serve`` (embedded engines, built-in responder); one warm-up session loads
what stays loaded (models, tokenizer, caches), then the start RSS is read. The burst:
``--sessions`` concurrent sessions, each adding ``--items`` user items of ``--item-mb`` MiB
of text, retrieving each, appending 5 MiB of audio and committing it, and asking for a text
reply; then every session closes. RSS (VmRSS of the server process, from /proc) is read at
the burst's peak and ``--settle`` seconds after the last session closed.

Allocator behaviour can be compared by passing glibc tunables to the server, e.g.
``--server-env MALLOC_ARENA_MAX=2``.
Usage: ``python bench/memory_burst.py [--sessions 10] [--items 8] [--item-mb 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from websockets.asyncio.client import ClientConnection, connect

from _realtime import machine, parse_env, voxgate_server
from _speech import log

TARGET_RATIO = 1.10


def server_pid(port: int) -> int:
    """The pid of the server listening on ``port`` (started with VOXGATE_PORT=port)."""
    marker = f"VOXGATE_PORT={port}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                return int(environ.parent.name)
        except OSError:
            continue
    raise RuntimeError(f"no process with {marker.decode()}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(120):
        while True:
            event: dict[str, Any] = json.loads(await ws.recv())
            if event["type"] == kind:
                return event
            if event["type"] == "error":
                raise RuntimeError(event["error"])


async def heavy_session(url: str, items: int, item_mb: float, peak: asyncio.Barrier) -> None:
    async with connect(url, max_size=None, compression=None) as ws:
        await until(ws, "session.created")
        text = "m" * int(item_mb * 1024 * 1024)
        content = [{"type": "input_text", "text": text}]
        for i in range(items):
            item = {"type": "message", "role": "user", "content": content, "id": f"item_{i}"}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await until(ws, "conversation.item.done")
            await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": item["id"]}))
            await until(ws, "conversation.item.retrieved")
        audio = base64.b64encode(bytes(5 * 1024 * 1024)).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await until(ws, "input_audio_buffer.committed")
        response = {"output_modalities": ["text"], "max_output_tokens": 20}
        await ws.send(json.dumps({"type": "response.create", "response": response}))
        await until(ws, "response.done")
        await peak.wait()  # every session is at its fullest here


async def sessions_open(port: int) -> int:
    async with httpx.AsyncClient() as http:
        count: int = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()["sessions"]
        return count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with voxgate_server(None, parse_env(args.server_env)) as url:
        port = urlparse(url).port
        assert port is not None
        pid = server_pid(port)
        warm = asyncio.Barrier(1)
        await heavy_session(url, 1, 0.1, warm)
        await asyncio.sleep(args.settle)
        start = rss_mb(pid)
        log(f"start RSS {start} MB")
        peak_barrier = asyncio.Barrier(args.sessions + 1)
        burst = [
            asyncio.create_task(heavy_session(url, args.items, args.item_mb, peak_barrier))
            for _ in range(args.sessions)
        ]
        await peak_barrier.wait()
        peak = rss_mb(pid)
        log(f"peak RSS {peak} MB")
        await asyncio.gather(*burst)
        closed_at = time.monotonic()
        for _ in range(600):  # the server closes them on its side: poll /healthz (≤ 60 s)
            if not await sessions_open(port):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)
        after = rss_mb(pid)
        log(f"RSS {args.settle} s after the burst: {after} MB")
        waited = round(time.monotonic() - closed_at, 1)
    ratio = round(after / start, 3)
    result: dict[str, Any] = {
        "benchmark": "memory_burst",
        "burst": {"sessions": args.sessions, "items": args.items, "item_mb": args.item_mb},
        "rss_mb": {"start": start, "peak": peak, "after": after},
        "seconds_after_close": waited,
        "after_to_start": ratio,
        "targets": {"after_to_start": TARGET_RATIO},
        "met": {"memory_returns": ratio <= TARGET_RATIO},
        "server_env": args.server_env,
        "machine": machine(),
    }
    result["all_met"] = all(result["met"].values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--item-mb", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading RSS")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
