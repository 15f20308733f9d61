"""What the production controls cost at the door, and how fast client secrets are minted.

Admission: two ``voxgate serve`` processes on free loopback ports, one in development mode
(no keys) and one with keys — a server policy (VOXGATE_POLICY), a tenant policy and a key
policy (so every admission reads the key and its tenant from the store, merges three
policies, takes the concurrency leases and writes two audit records). Sessions are opened
one at a time, alternating between the two servers so both see the same machine load; the
time of one is from starting the WebSocket connection to receiving ``session.created``.
Reports p50 and p99 of each and the p99 added by the controls (target ≤ 5 ms).

Minting: client secrets minted through the application in this process (one event loop, so
one core; ASGI calls without sockets, ``--concurrency`` requests in flight), each request a
real ``POST /v1/realtime/client_secrets`` with a key, a policy, a bound session, a store
write and an audit record. Reports secrets per second (target ≥ 500).

Prints one JSON object. Usage: ``python bench/admission.py [--sessions 300] [--mints 2000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from _realtime import machine, voxgate_server
from _speech import log, ms, percentile

ADMIN = "sk-bench-admin"
TARGET_ADDED_P99_MS = 5.0
TARGET_MINTS_PER_S = 500.0
SERVER_POLICY = {"max_session_seconds": 3600, "allowed_models": ["gpt-*"]}
TENANT_POLICY = {"idle_timeout_seconds": 600, "allowed_voices": ["*"]}
KEY_POLICY = {
    "max_concurrent_sessions": 1000,
    "max_concurrent_sessions_per_user": 100,
    "allowed_tools": ["*"],
    "client_secret_uses": 1,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions per server")
    parser.add_argument("--mints", type=int, default=2000, help="client secrets to mint")
    parser.add_argument("--concurrency", type=int, default=32, help="mints in flight")
    parser.add_argument(
        "--database-url",
        help="mint into this (empty) store instead of a temporary SQLite file, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1/voxgate_bench",
    )
    return parser.parse_args()


async def make_key(base: str) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        put = await http.put("/v1/admin/tenants/bench", json={"policy": TENANT_POLICY})
        put.raise_for_status()
        made = await http.post(
            "/v1/admin/keys",
            json={"name": "bench", "tenant": "bench", "policy": KEY_POLICY,
                  "scopes": ["realtime", "client_secrets"]},
        )  # fmt: skip
        made.raise_for_status()
        return str(made.json()["key"])


async def open_session(url: str, key: str | None) -> float:
    """Seconds from connecting to ``session.created``."""
    headers = {"Authorization": f"Bearer {key}", "OpenAI-Safety-Identifier": "bench-user"}
    started = time.perf_counter()
    async with connect(f"{url}?model=gpt-realtime", additional_headers=headers) as ws:
        first = json.loads(await ws.recv())
        took = time.perf_counter() - started
    if first["type"] != "session.created":
        raise RuntimeError(f"admission refused: {first}")
    return took


async def admission(sessions: int) -> dict[str, Any]:
    # Admission uses no speech recognition: one worker each keeps the machine quiet.
    common = {"VOXGATE_STT_WORKERS": "1"}
    keyed_env = common | {
        "VOXGATE_API_KEYS": ADMIN,
        "VOXGATE_POLICY": json.dumps(SERVER_POLICY),
    }
    async with (
        voxgate_server(None, common) as dev_url,
        voxgate_server(None, keyed_env) as keyed_url,
    ):
        key = await make_key(keyed_url.replace("ws://", "http://").removesuffix("/v1/realtime"))
        for _ in range(10):  # warm both up (imports, first store access); not counted
            await open_session(dev_url, "dev")
            await open_session(keyed_url, key)
        dev, keyed = [], []
        for i in range(sessions):
            # Which server goes first alternates too, so neither always follows the other.
            if i % 2:
                dev.append(await open_session(dev_url, "dev"))
                keyed.append(await open_session(keyed_url, key))
            else:
                keyed.append(await open_session(keyed_url, key))
                dev.append(await open_session(dev_url, "dev"))
            if (i + 1) % 100 == 0:
                log(f"{i + 1}/{sessions} sessions per server")
    result: dict[str, Any] = {"sessions_per_server": sessions}
    for name, times in (("dev_mode", dev), ("keys_and_policy", keyed)):
        result[name] = {"p50_ms": ms(percentile(times, 50)), "p99_ms": ms(percentile(times, 99))}
    added = (percentile(keyed, 99) or 0) - (percentile(dev, 99) or 0)
    result["added_p99_ms"] = ms(added)
    result["added_p50_ms"] = ms((percentile(keyed, 50) or 0) - (percentile(dev, 50) or 0))
    result["target_added_p99_ms"] = TARGET_ADDED_P99_MS
    result["met"] = added * 1000 <= TARGET_ADDED_P99_MS
    return result


async def minting(mints: int, concurrency: int, database_url: str | None) -> dict[str, Any]:
    from voxgate.engines.testing import ScriptedLLM, ScriptedTTS
    from voxgate.server.app import create_app
    from voxgate.session.engines import EngineSet
    from voxgate.settings import Settings

    data = Path(tempfile.mkdtemp(prefix="voxgate-bench-mint-"))
    settings = Settings(
        data_dir=data,
        database_url=database_url or "",
        api_keys=[ADMIN],
        policy=SERVER_POLICY,
        log_level="warning",
    )
    app = create_app(settings, EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS()))
    body = json.dumps(
        {
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {"output": {"voice": "marin"}},
            },
        }  # fmt: skip
    ).encode()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            key = await make_key_asgi(http)
        remaining = [mints]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                status = await asgi_post(app, "/v1/realtime/client_secrets", body, key)
                if status != 200:
                    raise RuntimeError(f"minting answered {status}")

        await asgi_post(app, "/v1/realtime/client_secrets", body, key)  # warm up
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for n in range(concurrency):
                tg.create_task(worker(), name=f"mint-worker-{n}")
        elapsed = time.perf_counter() - started
    rate = mints / elapsed
    return {
        "mints": mints,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "per_second": round(rate, 1),
        "target_per_second": TARGET_MINTS_PER_S,
        "met": rate >= TARGET_MINTS_PER_S,
        "store": settings.database_url.split(":")[0],
    }


async def asgi_post(app: Any, path: str, body: bytes, key: str) -> int:
    """One POST straight into the ASGI application (no sockets, no HTTP client): what is
    timed is the server's own work."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"openai-safety-identifier", b"bench-user"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


async def make_key_asgi(http: httpx.AsyncClient) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    made = await http.post(
        "/v1/admin/keys",
        json={"name": "mint", "scopes": ["client_secrets"], "policy": KEY_POLICY},
        headers=headers,
    )
    made.raise_for_status()
    return str(made.json()["key"])


async def main() -> None:
    args = parse_args()
    result: dict[str, Any] = {"machine": machine()}
    if args.mints:
        log(f"minting {args.mints} client secrets")
        result["minting"] = await minting(args.mints, args.concurrency, args.database_url)
    if args.sessions:
        log(f"admitting {args.sessions} sessions per server")
        result["admission"] = await admission(args.sessions)
    result["targets"] = {
        "added_p99_ms": TARGET_ADDED_P99_MS,
        "mints_per_second": TARGET_MINTS_PER_S,
    }
    result["all_met"] = all(
        part["met"] for k, part in result.items() if k in ("minting", "admission")
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
