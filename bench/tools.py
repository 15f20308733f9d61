"""What the server-tool guardrails cost per call.

In one process, against a local HTTP tool service (threaded ``http.server``, keep-alive):
- ``decision``: the broker's checks for one call (allowlist, JSON Schema validation of the
  arguments, limits, confirmation) — target p95 under 1 ms;
- ``http_call``: a guarded, signed call through the tool registry (body with the caller,
  identity headers, HMAC signature, timeout, concurrency slot) against the same POST made
  directly with httpx, calls alternating — target: the median overhead under 2 ms.
Usage: ``python bench/tools.py [--calls 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from voxgate.control.tools import ToolSpec
from voxgate.session.clock import SystemClock
from voxgate.session.tool_exec import ToolRegistry
from voxgate.session.tools import Ready, ToolBroker


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, Nagle and delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        data = b'{"forecast": "sunny"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(calls: int) -> dict[str, Any]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/weather"
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city"],
        "additionalProperties": False,
    }
    spec = ToolSpec(name="get_weather", kind="http", url=url, parameters=schema)
    registry = ToolRegistry([spec], signing_secret="bench-secret")
    broker = ToolBroker(registry, None, "sess_bench", SystemClock())
    raw = json.dumps({"city": "Paris", "days": 3})

    decision: list[float] = []
    for i in range(calls):
        start = time.perf_counter()
        ready = broker.check("get_weather", f"call_{i}", raw, f"act_{i}")
        decision.append(time.perf_counter() - start)
        assert isinstance(ready, Ready)

    guarded: list[float] = []
    direct: list[float] = []
    body = json.dumps({"tool": "get_weather", "arguments": {"city": "Paris"}}).encode()
    async with httpx.AsyncClient() as http:
        for i in range(calls):
            start = time.perf_counter()
            result = await registry.execute(spec, {"city": "Paris"}, broker.caller, f"k{i}")
            guarded.append(time.perf_counter() - start)
            assert result.status == "ok"
            start = time.perf_counter()
            reply = await http.post(url, content=body, headers={"Content-Type": "application/json"})
            direct.append(time.perf_counter() - start)
            assert reply.status_code == 200
    await registry.aclose()
    httpd.shutdown()
    overhead_ms = (statistics.median(guarded) - statistics.median(direct)) * 1000
    return {
        "calls": calls,
        "decision": {
            "p50_us": round(statistics.median(decision) * 1e6, 1),
            "p95_us": round(percentile(decision, 95) * 1e6, 1),
            "target_p95_us": 1000,
        },
        "http_call": {
            "guarded_p50_ms": round(statistics.median(guarded) * 1000, 3),
            "guarded_p95_ms": round(percentile(guarded, 95) * 1000, 3),
            "direct_p50_ms": round(statistics.median(direct) * 1000, 3),
            "direct_p95_ms": round(percentile(direct, 95) * 1000, 3),
            "overhead_p50_ms": round(overhead_ms, 3),
            "target_overhead_p50_ms": 2.0,
        },
        "met": percentile(decision, 95) < 1e-3 and overhead_ms < 2.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    print(json.dumps(asyncio.run(main(parser.parse_args().calls)), indent=2))
