"""The ledger in the store: writes (the `LedgerStore` the sessions use), deletions and the
scheduled expiry of transcripts.

Each usage write is one transaction (the session row if new, the usage row, the session's
running totals) through the async driver, so the event loop never waits on the disk; when
`record_usage` returns the row is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..control.ledger import SessionInfo, TranscriptEntry
from ..control.observer import SessionEnd
from ..control.usage import UsageRecord
from .ledger_tables import sessions, transcripts, usage
from .tables import audit_log, client_secrets


def _session_row(info: SessionInfo) -> dict[str, Any]:
    return {
        "id": info.session_id,
        "key_id": info.key_id,
        "tenant": info.tenant,
        "user_hash": info.user_hash,
        "client_secret_id": info.client_secret_id,
        "model": info.model,
        "engine": info.engine,
        "transport": info.transport,
        "started_at": info.started_at,
        "responses": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }


async def _open_session(conn: AsyncConnection, info: SessionInfo) -> None:
    """Insert the session's row unless it exists (the first write of a session makes it)."""
    row = _session_row(info)
    if conn.dialect.name == "postgresql":
        await conn.execute(postgresql.insert(sessions).values(row).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        await conn.execute(sqlite.insert(sessions).values(row).on_conflict_do_nothing())
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(conn.dialect.name)


class LedgerRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Sessions whose row this process already made: later writes skip the insert.
        self._opened: set[str] = set()

    async def _ensure(self, conn: AsyncConnection, info: SessionInfo) -> None:
        if info.session_id not in self._opened:
            await _open_session(conn, info)

    async def record_usage(
        self,
        session: SessionInfo,
        record: UsageRecord,
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        async with self.engine.begin() as conn:
            await self._ensure(conn, session)
            await conn.execute(usage.insert().values(asdict(record)))
            if transcript:
                rows = [{**asdict(e), "user_hash": session.user_hash} for e in transcript]
                await conn.execute(transcripts.insert(), rows)
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == record.session_id)
                .values(
                    responses=sessions.c.responses + (1 if record.kind == "response" else 0),
                    input_tokens=sessions.c.input_tokens
                    + record.input_text_tokens
                    + record.input_audio_tokens,
                    output_tokens=sessions.c.output_tokens
                    + record.output_text_tokens
                    + record.output_audio_tokens,
                    cost_usd=sessions.c.cost_usd + record.cost_usd,
                )
            )
        self._opened.add(session.session_id)

    async def record_transcript(self, session: SessionInfo, entry: TranscriptEntry) -> None:
        async with self.engine.begin() as conn:
            await self._ensure(conn, session)
            await conn.execute(
                transcripts.insert().values(**asdict(entry), user_hash=session.user_hash)
            )
        self._opened.add(session.session_id)

    async def end_session(self, session: SessionInfo, end: SessionEnd, at: float) -> None:
        async with self.engine.begin() as conn:
            await _open_session(conn, session)
            await conn.execute(
                update(sessions)
                .where(sessions.c.id == session.session_id)
                .values(
                    ended_at=at,
                    end_reason=end.reason,
                    end_code=end.error_code,
                    end_message=end.message or None,
                )
            )
        self._opened.discard(session.session_id)

    async def expire_transcripts(self, now: float) -> int:
        """Delete transcript entries past their retention; returns how many."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(transcripts).where(
                    transcripts.c.expires_at.is_not(None), transcripts.c.expires_at <= now
                )
            )
        return int(result.rowcount or 0)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session's row, usage and transcript; False when there was none."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(usage).where(usage.c.session_id == session_id))
            await conn.execute(delete(transcripts).where(transcripts.c.session_id == session_id))
            result = await conn.execute(delete(sessions).where(sessions.c.id == session_id))
        return bool(result.rowcount)

    async def delete_user(self, user_hash: str) -> dict[str, int]:
        """Delete everything stored about one end user: sessions, usage, transcripts and
        client secrets minted for them; the audit log keeps its records without the user."""
        counts: dict[str, int] = {}
        async with self.engine.begin() as conn:
            ids = select(sessions.c.id).where(sessions.c.user_hash == user_hash)
            for name, table in (("usage", usage), ("transcripts", transcripts)):
                result = await conn.execute(
                    delete(table).where(
                        (table.c.user_hash == user_hash) | table.c.session_id.in_(ids)
                    )
                )
                counts[name] = int(result.rowcount or 0)
            result = await conn.execute(delete(sessions).where(sessions.c.user_hash == user_hash))
            counts["sessions"] = int(result.rowcount or 0)
            result = await conn.execute(
                delete(client_secrets).where(client_secrets.c.user_hash == user_hash)
            )
            counts["client_secrets"] = int(result.rowcount or 0)
            await conn.execute(
                update(audit_log).where(audit_log.c.user_hash == user_hash).values(user_hash=None)
            )
        return counts
