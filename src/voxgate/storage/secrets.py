"""Client secrets in the store: minting, the atomic use at admission, revocation."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.secrets import ClientSecret
from .keys import bump_stamp
from .tables import client_secrets

UseOutcome = Literal["ok", "unknown", "expired", "revoked", "used"]


def _secret(row: RowMapping) -> ClientSecret:
    return ClientSecret(
        id=row["id"],
        key_id=row["key_id"],
        tenant=row["tenant"],
        user_hash=row["user_hash"],
        session=row["session"],
        bound=row["bound"],
        policy=row["policy"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        revoked_at=row["revoked_at"],
    )


class SecretRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, secret: ClientSecret, hash_: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                client_secrets.insert().values(
                    id=secret.id,
                    hash=hash_,
                    key_id=secret.key_id,
                    tenant=secret.tenant,
                    user_hash=secret.user_hash,
                    session=secret.session,
                    bound=secret.bound,
                    policy=secret.policy,
                    created_at=secret.created_at,
                    expires_at=secret.expires_at,
                    max_uses=secret.max_uses,
                    uses=0,
                )
            )

    async def use(self, hash_: str, now: float) -> tuple[UseOutcome, ClientSecret | None]:
        """Take one use of the secret with this hash, atomically (two replicas racing for
        the last use: one wins). Says why when it cannot be used."""
        c = client_secrets.c
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(client_secrets)
                .where(
                    c.hash == hash_,
                    c.revoked_at.is_(None),
                    c.expires_at > now,
                    c.uses < c.max_uses,
                )
                .values(uses=c.uses + 1)
            )
            row = (await conn.execute(select(client_secrets).where(c.hash == hash_))).mappings()
            found = row.first()
        if found is None:
            return "unknown", None
        secret = _secret(found)
        if taken.rowcount == 1:
            return "ok", secret
        if secret.revoked_at is not None:
            return "revoked", secret
        if secret.expires_at <= now:
            return "expired", secret
        return "used", secret

    async def give_back(self, secret_id: str) -> None:
        """Return a use taken by an admission that was then refused."""
        c = client_secrets.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(client_secrets).where(c.id == secret_id, c.uses > 0).values(uses=c.uses - 1)
            )

    async def find(self, hash_: str) -> ClientSecret | None:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(client_secrets).where(client_secrets.c.hash == hash_))
            row = rows.mappings().first()
            return _secret(row) if row is not None else None

    async def get(self, secret_id: str) -> ClientSecret | None:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(client_secrets).where(client_secrets.c.id == secret_id)
            )
            row = rows.mappings().first()
            return _secret(row) if row is not None else None

    async def revoke(self, secret_id: str, now: float) -> ClientSecret | None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(client_secrets)
                .where(client_secrets.c.id == secret_id, client_secrets.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await bump_stamp(conn)
        return await self.get(secret_id)

    async def revoked_among(self, ids: list[str]) -> set[str]:
        """Which of these secret ids are revoked (the live sessions' secrets)."""
        if not ids:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(client_secrets.c.id).where(
                    client_secrets.c.id.in_(ids), client_secrets.c.revoked_at.is_not(None)
                )
            )
            return {r[0] for r in rows}
