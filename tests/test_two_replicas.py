"""Two server processes sharing the real PostgreSQL and Redis: concurrency caps and daily
budgets hold across both, a crashed replica's slots come back, a revocation through one is
refused by the other, both write one ledger, and a call held by one is reachable through the
other."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _replica_procs import Replica, ReplicaSet, fresh_postgres_database, replica_set, voxgate_cli
from voxgate.call.webrtc import WebRTCPeer, hang_up, post_offer
from voxgate.control.keys import generate_key
from voxgate.control.policy import Policy
from voxgate.storage.db import create_engine
from voxgate.storage.keys import KeyRepository


class Deployment:
    def __init__(self, database_url: str, admin_key: str, replicas: ReplicaSet) -> None:
        self.database_url = database_url
        self.admin_key = admin_key
        self.replicas = replicas
        self.a = replicas.start("a")
        self.b = replicas.start("b")


async def _create_key(database_url: str, name: str, policy: dict[str, Any]) -> str:
    engine = create_engine(database_url)
    try:
        new = generate_key()
        await KeyRepository(engine).create(
            new,
            name=name,
            tenant=None,
            scopes=frozenset({"realtime", "client_secrets"}),
            policy=Policy.model_validate(policy),
            now=time.time(),
        )
        return new.value
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    log_dir = tmp_path_factory.mktemp("replicas")
    with fresh_postgres_database() as url:
        # The operator's first key, made on the store before any replica starts.
        env = {"VOXGATE_DATABASE_URL": url, "VOXGATE_DATA_DIR": str(log_dir / "cli")}
        voxgate_cli(["db", "upgrade"], env)
        created = voxgate_cli(["keys", "create", "--name", "ops", "--scopes", "admin"], env)
        admin_key = created.strip().splitlines()[-1]
        with replica_set(url, log_dir) as replicas:
            yield Deployment(url, admin_key, replicas)


@contextlib.asynccontextmanager
async def opened(replica: Replica, key: str, user: str | None = None) -> AsyncIterator[Any]:
    """A WebSocket session through the SDK, and its first event (session.created or the
    refusal's error)."""
    headers = {"OpenAI-Safety-Identifier": user} if user else {}
    client = AsyncOpenAI(base_url=replica.base_url, api_key=key, max_retries=0)
    async with client.realtime.connect(model="gpt-realtime", extra_headers=headers) as conn:
        conn.first = await asyncio.wait_for(conn.recv(), 30)
        yield conn


def refusal_code(conn: Any) -> str | None:
    return conn.first.error.code if conn.first.type == "error" else None


async def admitted_within(replica: Replica, key: str, user: str | None, within_s: float) -> bool:
    """A slot freed on one replica becomes usable on the other: retry until admitted."""
    deadline = time.monotonic() + within_s
    while True:
        async with opened(replica, key, user) as conn:
            if conn.first.type == "session.created":
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def test_the_per_key_cap_holds_across_both_replicas(deployment: Deployment) -> None:
    key = await _create_key(deployment.database_url, "capped", {"max_concurrent_sessions": 2})
    a, b = deployment.a, deployment.b
    async with opened(a, key) as one, opened(b, key) as two:
        assert one.first.type == "session.created"
        assert two.first.type == "session.created"
        async with opened(a, key) as three, opened(b, key) as four:
            assert refusal_code(three) == "concurrent_sessions_exceeded"
            assert refusal_code(four) == "concurrent_sessions_exceeded"
        await one.close()
        # The slot freed on A is free on B.
        assert await admitted_within(b, key, None, 10)


async def test_the_per_user_cap_holds_across_both_replicas(deployment: Deployment) -> None:
    key = await _create_key(
        deployment.database_url, "per-user", {"max_concurrent_sessions_per_user": 1}
    )
    a, b = deployment.a, deployment.b
    async with opened(a, key, "alice") as alice:
        assert alice.first.type == "session.created"
        async with opened(b, key, "alice") as again, opened(b, key, "bob") as bob:
            assert refusal_code(again) == "concurrent_sessions_exceeded"
            assert bob.first.type == "session.created"


async def test_a_sideband_attach_reaches_a_call_held_by_the_other_replica(
    deployment: Deployment,
) -> None:
    key = await _create_key(deployment.database_url, "caller", {})
    a, b = deployment.a, deployment.b
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        answer = await post_offer(http, a.base_url, await peer.create_offer(), api_key=key)
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        client = AsyncOpenAI(base_url=b.base_url, api_key=key, max_retries=0)
        async with client.realtime.connect(call_id=answer.call_id) as sideband:
            created = await sideband.recv()
            assert created.type == "session.created"
            await sideband.session.update(
                session={"type": "realtime", "instructions": "Answer in one word."}
            )
            updated = await sideband.recv()
            assert updated.type == "session.updated"
            on_channel = await peer.events.until("session.updated", 30)
            assert on_channel[-1].data["session"]["instructions"] == "Answer in one word."
        assert await hang_up(http, b.base_url, answer.call_id, api_key=key) == 200
        with pytest.raises(Exception, match="closed"):
            while True:
                await peer.events.next(timeout_s=10)


async def _one_turn(conn: Any) -> tuple[str, str]:
    """Ask for one text reply; the session id and the response id the client was shown."""
    session_id = conn.first.session.id
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    await conn.response.create(response={"output_modalities": ["text"], "max_output_tokens": 8})
    while (event := await asyncio.wait_for(conn.recv(), 30)).type != "response.done":
        pass
    return session_id, event.response.id


async def test_both_replicas_write_one_ledger(deployment: Deployment) -> None:
    key = await _create_key(deployment.database_url, "ledgered", {})
    a, b = deployment.a, deployment.b
    async with opened(a, key) as on_a, opened(b, key) as on_b:
        shown = [await _one_turn(on_a), await _one_turn(on_b)]
    auth = {"Authorization": f"Bearer {deployment.admin_key}"}
    async with httpx.AsyncClient(headers=auth, timeout=10) as http:
        # Each replica reads the rows the other wrote.
        for (session_id, response_id), reader in zip(shown, (b, a), strict=True):
            answer = await http.get(f"{reader.base_url}/admin/sessions/{session_id}")
            assert answer.status_code == 200, answer.text
            record = answer.json()
            assert [u["response_id"] for u in record["usage"]] == [response_id]
            assert record["key_id"] is not None


async def test_a_secret_revoked_through_one_replica_is_refused_by_the_other(
    deployment: Deployment,
) -> None:
    key = await _create_key(deployment.database_url, "minter", {"client_secret_uses": 5})
    a, b = deployment.a, deployment.b
    async with AsyncOpenAI(base_url=a.base_url, api_key=key, max_retries=0) as minter:
        raw = await minter.realtime.client_secrets.with_raw_response.create(
            expires_after={"anchor": "created_at", "seconds": 600},
            session={"type": "realtime", "model": "gpt-realtime"},
        )
    secret_id = raw.headers["x-voxgate-client-secret-id"]
    secret = raw.parse().value
    async with opened(b, secret) as live:
        assert live.first.type == "session.created"
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.delete(
                f"{a.base_url}/admin/client_secrets/{secret_id}",
                headers={"Authorization": f"Bearer {deployment.admin_key}"},
            )
            assert answer.status_code == 200, answer.text
        # The other replica refuses the secret from the moment the revocation returns
        # (no waiting at all: stricter than "within a second") …
        async with opened(b, secret) as again:
            assert refusal_code(again) == "client_secret_revoked"
        # … and ends the session it holds with it, saying why.
        while (event := await asyncio.wait_for(live.recv(), 10)).type != "error":
            pass
        assert event.error.code == "client_secret_revoked"


async def test_a_daily_budget_spent_on_one_replica_is_spent_on_the_other(
    deployment: Deployment,
) -> None:
    key = await _create_key(deployment.database_url, "thrifty", {"budget_tokens_per_day": 5})
    async with opened(deployment.a, key) as on_a:
        await _one_turn(on_a)
    # The tokens counted on A exhaust the day's budget for B too.
    async with opened(deployment.b, key) as on_b:
        assert refusal_code(on_b) == "budget_exceeded"


async def test_a_crashed_replica_does_not_keep_its_sessions_slots(deployment: Deployment) -> None:
    key = await _create_key(deployment.database_url, "crash", {"max_concurrent_sessions": 1})
    doomed = deployment.replicas.start("c")
    async with opened(doomed, key) as held:
        assert held.first.type == "session.created"
        async with opened(deployment.b, key) as refused:
            assert refusal_code(refused) == "concurrent_sessions_exceeded"
        doomed.kill()
    # Nobody gave the slot back; its lease expires (10 s) and the other replica admits.
    assert await admitted_within(deployment.b, key, None, 30)
