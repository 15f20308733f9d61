"""The store on SQLite (default) and PostgreSQL (VOXGATE_TEST_DATABASE_URL): migrations,
keys, tenants, client secrets (atomic use), the audit log and its recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from voxgate.control.audit import AuditRecord
from voxgate.control.identity import hash_secret
from voxgate.control.keys import generate_key
from voxgate.control.policy import Policy
from voxgate.control.secrets import ClientSecret, generate_secret
from voxgate.storage.audit import AuditRecorder, AuditRepository
from voxgate.storage.db import create_engine, current_revision, upgrade
from voxgate.storage.keys import KeyRepository, TenantRepository
from voxgate.storage.secrets import SecretRepository


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_upgrade_is_idempotent_and_reaches_head(
    database_url: str, engine: AsyncEngine
) -> None:
    await upgrade(database_url)  # a second start-up changes nothing
    assert await current_revision(engine) is not None
    assert (await KeyRepository(engine).stamp()) == 0


async def test_keys_are_stored_hashed_and_revocation_bumps_the_stamp(engine: AsyncEngine) -> None:
    repo = KeyRepository(engine)
    new = generate_key()
    key = await repo.create(
        new,
        name="backend",
        tenant="acme",
        scopes=frozenset({"realtime", "client_secrets"}),
        policy=Policy(max_concurrent_sessions=2),
        now=100.0,
    )
    cached = await repo.by_hash()
    assert set(cached) == {hash_secret(new.value)}
    assert cached[hash_secret(new.value)].policy.max_concurrent_sessions == 2
    listed = [k.to_json() for k in await repo.list()]
    assert listed[0]["prefix"] == new.prefix and new.value not in str(listed)
    stamp = await repo.stamp()
    updated = await repo.update(key.id, policy=Policy(allowed_voices=["alloy"]))
    assert updated is not None and updated.policy.allowed_voices == ["alloy"]
    revoked = await repo.revoke(key.id, now=200.0)
    assert revoked is not None and revoked.revoked_at == 200.0
    assert await repo.stamp() == stamp + 2


async def test_tenant_policy_upserts(engine: AsyncEngine) -> None:
    repo = TenantRepository(engine)
    await repo.set("acme", Policy(max_session_seconds=60), now=1.0)
    await repo.set("acme", Policy(max_session_seconds=30), now=2.0)
    assert (await repo.all())["acme"].max_session_seconds == 30


def _secret(max_uses: int, expires_at: float = 1000.0) -> tuple[ClientSecret, str]:
    new = generate_secret()
    secret = ClientSecret(
        id=new.id,
        key_id="key_1",
        tenant=None,
        user_hash=None,
        session={"type": "realtime"},
        bound={},
        policy={},
        created_at=0.0,
        expires_at=expires_at,
        max_uses=max_uses,
    )
    return secret, new.hash


async def test_secret_uses_are_taken_atomically(engine: AsyncEngine) -> None:
    repo = SecretRepository(engine)
    secret, hash_ = _secret(max_uses=3)
    await repo.insert(secret, hash_)
    outcomes = await asyncio.gather(*(repo.use(hash_, now=10.0) for _ in range(6)))
    assert sorted(o for o, _ in outcomes) == ["ok", "ok", "ok", "used", "used", "used"]


async def test_secret_refusals_say_why(engine: AsyncEngine) -> None:
    repo = SecretRepository(engine)
    expiring, expiring_hash = _secret(max_uses=5, expires_at=50.0)
    revoked, revoked_hash = _secret(max_uses=5)
    await repo.insert(expiring, expiring_hash)
    await repo.insert(revoked, revoked_hash)
    await repo.revoke(revoked.id, now=5.0)
    assert (await repo.use(expiring_hash, now=60.0))[0] == "expired"
    assert (await repo.use(revoked_hash, now=6.0))[0] == "revoked"
    assert (await repo.use(hash_secret("ek_never_issued"), now=6.0))[0] == "unknown"
    assert await repo.revoked_among([expiring.id, revoked.id]) == {revoked.id}


async def test_audit_recorder_writes_in_the_background(engine: AsyncEngine) -> None:
    repo = AuditRepository(engine)
    recorder = AuditRecorder(repo)
    recorder.start()
    for i in range(30):
        recorder.record(AuditRecord("admission", key_id="key_1", code=None, at=float(i)))
    recorder.record(AuditRecord("admission", key_id="key_2", code="invalid_api_key", at=99.0))
    await recorder.aclose()
    rows = await repo.query()
    assert len(rows) == 31
    assert (await repo.query(key_id="key_2"))[0]["code"] == "invalid_api_key"
    assert len(await repo.query(start_time=10.0, end_time=20.0)) == 10
