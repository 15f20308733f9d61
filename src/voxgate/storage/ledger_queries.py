"""Reading the ledger: usage totals grouped for reports, sessions with filters, one session
with its usage and transcript."""

from __future__ import annotations

from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .ledger_tables import sessions, transcripts, usage

GroupBy = Literal["session", "key", "tenant", "user", "model", "day"]
GROUPS: tuple[str, ...] = get_args(GroupBy)
SUMMED = (
    "input_text_tokens",
    "input_audio_tokens",
    "cached_tokens",
    "output_text_tokens",
    "output_audio_tokens",
    "audio_seconds_in",
    "audio_seconds_out",
    "characters_spoken",
    "cost_usd",
)


def _group_column(group_by: GroupBy, dialect: str) -> ColumnElement[Any]:
    if group_by == "day":
        if dialect == "postgresql":
            return func.to_char(
                func.timezone("UTC", func.to_timestamp(usage.c.at)), literal_column("'YYYY-MM-DD'")
            )
        return func.date(usage.c.at, literal_column("'unixepoch'"))
    column = {
        "session": usage.c.session_id,
        "key": usage.c.key_id,
        "tenant": usage.c.tenant,
        "user": usage.c.user_hash,
        "model": usage.c.model,
    }[group_by]
    return column


class LedgerQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def usage_report(
        self,
        group_by: GroupBy,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> list[dict[str, Any]]:
        """Totals per group over ``[start_time, end_time)``, ordered by group."""
        group = _group_column(group_by, self.engine.dialect.name).label("group")
        query = select(
            group,
            func.count().label("records"),
            func.sum(case((usage.c.kind == "response", 1), else_=0)).label("responses"),
            *(func.sum(usage.c[name]).label(name) for name in SUMMED),
        ).group_by(group)
        if start_time is not None:
            query = query.where(usage.c.at >= start_time)
        if end_time is not None:
            query = query.where(usage.c.at < end_time)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(group))).mappings().all()
        out = []
        for row in rows:
            entry: dict[str, Any] = {"group_by": group_by, "group": row["group"]}
            entry["records"] = int(row["records"])
            entry["responses"] = int(row["responses"] or 0)
            for name in SUMMED:
                value = row[name] or 0
                entry[name] = (
                    float(value) if "seconds" in name or name == "cost_usd" else int(value)
                )
            entry["input_tokens"] = entry["input_text_tokens"] + entry["input_audio_tokens"]
            entry["output_tokens"] = entry["output_text_tokens"] + entry["output_audio_tokens"]
            entry["cost_usd"] = round(entry["cost_usd"], 9)
            out.append(entry)
        return out

    async def list_sessions(
        self,
        *,
        key_id: str | None = None,
        user_hash: str | None = None,
        tenant: str | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Sessions, newest first, that started in ``[start_time, end_time)``."""
        query = select(sessions)
        for column, value in (
            (sessions.c.key_id, key_id),
            (sessions.c.user_hash, user_hash),
            (sessions.c.tenant, tenant),
        ):
            if value is not None:
                query = query.where(column == value)
        if start_time is not None:
            query = query.where(sessions.c.started_at >= start_time)
        if end_time is not None:
            query = query.where(sessions.c.started_at < end_time)
        query = query.order_by(sessions.c.started_at.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_session(dict(r)) for r in (await conn.execute(query)).mappings()]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """One session: its metadata, end, totals, usage rows and transcript."""
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(sessions).where(sessions.c.id == session_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            used = await conn.execute(
                select(usage).where(usage.c.session_id == session_id).order_by(usage.c.id)
            )
            said = await conn.execute(
                select(transcripts)
                .where(transcripts.c.session_id == session_id)
                .order_by(transcripts.c.at, transcripts.c.id)
            )
            out = _session(dict(row))
            out["usage"] = [
                {k: v for k, v in dict(u).items() if k != "id"} for u in used.mappings()
            ]
            out["transcript"] = [
                {k: t[k] for k in ("item_id", "role", "text", "at", "expires_at")}
                for t in said.mappings()
            ]
        return out


def _session(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "realtime.session.record",
        "key_id": row["key_id"],
        "tenant": row["tenant"],
        "user_hash": row["user_hash"],
        "client_secret_id": row["client_secret_id"],
        "model": row["model"],
        "engine": row["engine"],
        "transport": row["transport"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "end_reason": row["end_reason"],
        "end_code": row["end_code"],
        "end_message": row["end_message"],
        "responses": row["responses"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_usd": round(row["cost_usd"], 9),
    }
