"""The audit log in the store, and the bounded background recorder that writes it.

Recording never blocks the caller: records go to a bounded queue that one owned task
writes in batches. Policy when the queue is full (the database is down or far behind):
the record is dropped and counted, and the count is logged — admission and audio go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.audit import AuditRecord
from .tables import audit_log

log = logging.getLogger(__name__)
QUEUE_LIMIT = 10_000
BATCH = 500


class AuditRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                audit_log.insert(),
                [
                    {
                        "at": r.at,
                        "action": r.action,
                        "key_id": r.key_id,
                        "tenant": r.tenant,
                        "user_hash": r.user_hash,
                        "session_id": r.session_id,
                        "code": r.code,
                        "detail": r.detail,
                    }
                    for r in records
                ],
            )

    async def query(
        self,
        *,
        start_time: float | None = None,
        end_time: float | None = None,
        action: str | None = None,
        key_id: str | None = None,
        session_id: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        c = audit_log.c
        query = select(audit_log).order_by(c.at, c.id).limit(limit)
        if start_time is not None:
            query = query.where(c.at >= start_time)
        if end_time is not None:
            query = query.where(c.at < end_time)
        if action is not None:
            query = query.where(c.action == action)
        if key_id is not None:
            query = query.where(c.key_id == key_id)
        if session_id is not None:
            query = query.where(c.session_id == session_id)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                {k: v for k, v in row.items() if k != "id"} | {"id": row["id"]}
                for row in rows.mappings()
            ]


class AuditRecorder:
    """An `AuditSink` writing through `AuditRepository` from one background task."""

    def __init__(self, repository: AuditRepository, limit: int = QUEUE_LIMIT) -> None:
        self.repository = repository
        self._queue: asyncio.Queue[AuditRecord] = asyncio.Queue(limit)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-recorder")

    def record(self, rec: AuditRecord) -> None:
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.error("audit log is behind: %d records dropped", self.dropped)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self.repository.write(batch)
            except Exception:
                self.dropped += len(batch)
                log.exception("writing %d audit records failed", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def flush(self) -> None:
        """Wait until everything recorded so far is written."""
        await self._queue.join()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
