"""Client secrets in the store: minting, the atomic use at admission, revocation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.secrets import ClientSecret
from .keys import bump_stamp, revoked_among
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
        await self.insert_many([(secret, hash_)])

    async def insert_many(self, secrets: Sequence[tuple[ClientSecret, str]]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                client_secrets.insert(),
                [
                    {
                        "id": secret.id,
                        "hash": hash_,
                        "key_id": secret.key_id,
                        "tenant": secret.tenant,
                        "user_hash": secret.user_hash,
                        "session": secret.session,
                        "bound": secret.bound,
                        "policy": secret.policy,
                        "created_at": secret.created_at,
                        "expires_at": secret.expires_at,
                        "max_uses": secret.max_uses,
                        "uses": 0,
                    }
                    for secret, hash_ in secrets
                ],
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
        return await revoked_among(self.engine, client_secrets, ids)


class SecretWriter:
    """Writes minted secrets in batches: requests minting at the same time share one
    transaction (one commit), and each waits until its secret is durable before the value is
    handed out. The queue is bounded (QUEUE_LIMIT); when it is full, minting waits."""

    QUEUE_LIMIT = 1024
    BATCH = 256

    def __init__(self, repository: SecretRepository) -> None:
        self.repository = repository
        self._queue: asyncio.Queue[tuple[ClientSecret, str, asyncio.Future[None]]] = asyncio.Queue(
            self.QUEUE_LIMIT
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="secret-writer")

    async def insert(self, secret: ClientSecret, hash_: str) -> None:
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((secret, hash_, done))
        await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.repository.insert_many([(s, h) for s, h, _ in batch])
            except Exception as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
