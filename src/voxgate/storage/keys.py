"""API keys and tenants in the store, and the change stamp that tells servers to reload."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..control.keys import ApiKey, NewKey
from ..control.policy import Policy
from .tables import api_keys, control_stamp, tenants


async def bump_stamp(conn: AsyncConnection) -> None:
    """Mark a change to keys, tenants or secrets; servers poll the stamp."""
    await conn.execute(
        update(control_stamp)
        .where(control_stamp.c.id == 1)
        .values(version=control_stamp.c.version + 1)
    )


async def revoked_among(engine: AsyncEngine, table: Table, ids: Sequence[str]) -> set[str]:
    """Which of these ids have a ``revoked_at`` in ``table`` (keys or client secrets)."""
    if not ids:
        return set()
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(table.c.id).where(table.c.id.in_(ids), table.c.revoked_at.is_not(None))
        )
        return {r[0] for r in rows}


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        tenant=row["tenant"],
        prefix=row["prefix"],
        scopes=frozenset(row["scopes"]),
        policy=Policy.model_validate(row["policy"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class KeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        new: NewKey,
        *,
        name: str,
        tenant: str | None,
        scopes: frozenset[str],
        policy: Policy,
        now: float,
    ) -> ApiKey:
        key = ApiKey(new.id, name, tenant, new.prefix, scopes, policy, now)
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    name=name,
                    tenant=tenant,
                    prefix=new.prefix,
                    hash=new.hash,
                    scopes=sorted(scopes),
                    policy=policy.to_json(),
                    created_at=now,
                )
            )
            await bump_stamp(conn)
        return key

    async def list(self) -> list[ApiKey]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            return [_key(r) for r in rows.mappings()]

    async def by_hash(self) -> dict[str, ApiKey]:
        """Every key by the hash of its value (what a server caches)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(api_keys))
            return {r["hash"]: _key(r) for r in rows.mappings()}

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings()
            first = row.first()
            return _key(first) if first is not None else None

    async def update(
        self,
        key_id: str,
        *,
        policy: Policy | None = None,
        scopes: frozenset[str] | None = None,
    ) -> ApiKey | None:
        values: dict[str, Any] = {}
        if policy is not None:
            values["policy"] = policy.to_json()
        if scopes is not None:
            values["scopes"] = sorted(scopes)
        async with self.engine.begin() as conn:
            if values:
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(values))
                await bump_stamp(conn)
        return await self.get(key_id)

    async def revoke(self, key_id: str, now: float) -> ApiKey | None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await bump_stamp(conn)
        return await self.get(key_id)

    async def find(self, hash_: str) -> ApiKey | None:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(api_keys).where(api_keys.c.hash == hash_))
            first = rows.mappings().first()
            return _key(first) if first is not None else None

    async def revoked_among(self, ids: Sequence[str]) -> set[str]:
        """Which of these key ids are revoked (the live sessions' keys)."""
        return await revoked_among(self.engine, api_keys, ids)

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
            )

    async def stamp(self) -> int:
        async with self.engine.connect() as conn:
            value = await conn.execute(select(control_stamp.c.version))
            return int(value.scalar_one())


class TenantRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def set(self, name: str, policy: Policy, now: float) -> None:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(tenants)
                .where(tenants.c.name == name)
                .values(policy=policy.to_json(), updated_at=now)
            )
            if done.rowcount == 0:
                await conn.execute(
                    tenants.insert().values(name=name, policy=policy.to_json(), updated_at=now)
                )
            await bump_stamp(conn)

    async def get(self, name: str) -> Policy | None:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(tenants.c.policy).where(tenants.c.name == name))
            value = rows.scalar_one_or_none()
            return Policy.model_validate(value) if value is not None else None

    async def all(self) -> dict[str, Policy]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(tenants))
            return {r["name"]: Policy.model_validate(r["policy"]) for r in rows.mappings()}
