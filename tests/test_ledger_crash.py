"""A crash cannot lose usage a client was shown: a real server process is killed with SIGKILL
in the middle of a burst of responses from several `openai` SDK clients, restarted on the
same database, and every ``response.done`` any client received has its ledger row."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from conftest import free_port

VOXGATE = str(Path(sys.executable).with_name("voxgate"))
CLIENTS = 4
# Responses the clients must have seen (in total) before the kill.
KILL_AFTER = 24


def serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [VOXGATE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                assert json.load(r)["status"] == "ok"
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("voxgate serve did not come up") from None
            time.sleep(0.1)


class Burst:
    """Clients that ask for text responses back to back and note every response.done."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: dict[str, list[str]] = {}
        self.enough = asyncio.Event()
        self.killed = False

    async def client(self, n: int) -> None:
        openai = AsyncOpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="sk-test")
        try:
            async with openai.realtime.connect(model="gpt-realtime") as conn:
                await self._talk(conn, n)
        except Exception:
            if not self.killed:
                raise  # only the kill may end a client

    async def _talk(self, conn: Any, n: int) -> None:
        session_id: str | None = None
        turn = 0
        await conn.response.create(response={"output_modalities": ["text"]})
        async for event in conn:
            if event.type == "session.created":
                session_id = event.session.id
                self.seen[session_id] = []
            elif event.type == "response.done":
                assert session_id is not None
                self.seen[session_id].append(event.response.id)
                # Kill once every client has been answered and the burst is big enough.
                answered = [ids for ids in self.seen.values() if ids]
                if len(answered) == CLIENTS and sum(map(len, answered)) >= KILL_AFTER:
                    self.enough.set()
                turn += 1
                text = f"Client {n} turn {turn}"
                item = {"type": "input_text", "text": text}
                await conn.conversation.item.create(
                    item={"type": "message", "role": "user", "content": [item]}
                )
                await conn.response.create(response={"output_modalities": ["text"]})


async def test_every_response_done_a_client_saw_has_a_ledger_row_after_sigkill(
    tmp_path: Path, database_url: str
) -> None:
    env = {
        **os.environ,
        "VOXGATE_DATA_DIR": str(tmp_path / "data"),
        "VOXGATE_DATABASE_URL": database_url,
        "VOXGATE_STT_WORKERS": "1",
        "VOXGATE_LOG_LEVEL": "warning",
    }
    proc, port = serve(env)
    burst = Burst(port)
    try:
        clients = [asyncio.create_task(burst.client(n), name=f"client-{n}") for n in range(CLIENTS)]
        async with asyncio.timeout(120):
            await burst.enough.wait()
        burst.killed = True
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: every client has a response in flight
        async with asyncio.timeout(60):
            await asyncio.gather(*clients)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    seen = {sid: ids for sid, ids in burst.seen.items() if ids}
    assert sum(map(len, seen.values())) >= KILL_AFTER and len(seen) == CLIENTS

    proc, port = serve(env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for session_id, response_ids in seen.items():
                reply = await http.get(f"/v1/admin/sessions/{session_id}")
                assert reply.status_code == 200, reply.text
                recorded = [u["response_id"] for u in reply.json()["usage"]]
                missing = [r for r in response_ids if r not in recorded]
                assert not missing, f"{session_id}: no ledger row for {missing}"
                # The rows are in the order the responses finished; none beyond what ran.
                assert recorded[: len(response_ids)] == response_ids
                assert len(recorded) <= len(response_ids) + 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
