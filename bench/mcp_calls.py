"""What one MCP tool call costs voxgate, against a real MCP server (the `mcp` SDK's
MCPServer over streamable HTTP, in a subprocess on loopback).

voxgate holds one connection per server per session (`McpConnection`); the baseline,
measured in the same run, is the same call through the SDK's own client on a connection held
open, and for reference a new connection per call (the design voxgate dropped). Prints one
JSON object: p50 and p95 per call in ms for each, voxgate's ratio to the baseline, and the
target (voxgate's p95 per call on loopback ≤ 50 ms, small beside a language model's turn).

Usage: ``python bench/mcp_calls.py [--calls 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx
from mcp import Client

from _realtime import free_port, machine
from _speech import percentile
from voxgate.engines.mcp.client import McpConnection
from voxgate.protocol.mcp import McpServer

TARGET_P95_MS = 50.0
SERVER = """
import sys, uvicorn
from mcp.server.mcpserver import MCPServer
mcp = MCPServer("bench")

@mcp.tool()
def echo(text: str) -> str:
    return text

uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
"""


def summary(samples_s: list[float]) -> dict[str, float | None]:
    return {
        f"p{q}_ms": None if (v := percentile(samples_s, q)) is None else round(v * 1000, 2)
        for q in (50, 95)
    }


async def timed(connection: McpConnection, i: int) -> float:
    start = time.perf_counter()
    result = await connection.call_tool("echo", {"text": f"hi {i}"})
    elapsed = time.perf_counter() - start
    assert result.output == f"hi {i}", result
    return elapsed


async def wait_up(url: str) -> None:
    async with asyncio.timeout(20), httpx.AsyncClient() as http:
        while True:
            try:
                await http.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.05)


async def measure(url: str, calls: int) -> dict[str, Any]:
    await wait_up(url)
    server = McpServer("bench", url)
    held_by_us = McpConnection(server)
    ours: list[float] = []
    base: list[float] = []
    # Interleaved, so both see the same load on the machine.
    async with Client(url, mode="legacy") as session:
        for i in range(calls):
            ours.append(await timed(held_by_us, i))
            start = time.perf_counter()
            await session.call_tool("echo", {"text": f"hi {i}"})
            base.append(time.perf_counter() - start)
    held_by_us.close()
    fresh: list[float] = []
    for i in range(calls):
        one = McpConnection(server)
        fresh.append(await timed(one, i))
        one.close()
    mine, theirs = summary(ours), summary(base)
    ratio = (mine["p50_ms"] or 0) / (theirs["p50_ms"] or 1)
    return {
        "calls": calls,
        "voxgate_held_connection": mine,
        "baseline_sdk_client_held": theirs,
        "reference_new_connection_per_call": summary(fresh),
        "p50_ratio_to_baseline": round(ratio, 2),
        "target": {"voxgate_p95_ms_max": TARGET_P95_MS},
        "met": (mine["p95_ms"] or 0) <= TARGET_P95_MS,
        "machine": machine(),
    }


def main(calls: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        return asyncio.run(measure(f"http://127.0.0.1:{port}/mcp", calls))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100)
    print(json.dumps(main(parser.parse_args().calls)))
