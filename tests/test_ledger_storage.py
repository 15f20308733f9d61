"""The ledger in the store (SQLite here, PostgreSQL when VOXGATE_TEST_DATABASE_URL is set):
usage rows with session totals, reports grouped every way, sessions with their transcript,
expiry on schedule, and deletion of a session or of everything about a user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from voxgate.control.ledger import SessionInfo, TranscriptEntry
from voxgate.control.observer import SessionEnd
from voxgate.control.usage import UsageRecord
from voxgate.storage.db import create_engine, current_revision, upgrade
from voxgate.storage.ledger import LedgerRepository
from voxgate.storage.ledger_queries import LedgerQueries

DAY1 = datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 11, 2, 23, 59, tzinfo=UTC).timestamp()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[LedgerRepository, LedgerQueries]]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    assert await current_revision(engine) == "0002_ledger"
    yield LedgerRepository(engine), LedgerQueries(engine)
    await engine.dispose()


def info(
    session_id: str, *, key: str = "key_a", tenant: str | None = "acme", user: str | None = "u1"
) -> SessionInfo:
    return SessionInfo(session_id, key, tenant, user, "gpt-realtime", "embedded", "websocket", DAY1)


def row(session: SessionInfo, at: float, tokens: int, usd: float, **extra: object) -> UsageRecord:
    base = UsageRecord(
        session.session_id,
        f"resp_{at}_{tokens}",
        "response",
        session.key_id,
        session.tenant,
        session.user_hash,
        session.model,
        session.engine,
        at,
    )
    return replace(
        base, input_text_tokens=tokens, output_audio_tokens=tokens, cost_usd=usd, **extra
    )  # type: ignore[arg-type]


async def test_usage_rows_keep_session_totals_and_group_every_way(
    store: tuple[LedgerRepository, LedgerQueries],
) -> None:
    repo, queries = store
    a, b = info("sess_a"), info("sess_b", key="key_b", tenant=None, user="u2")
    await repo.record_usage(a, row(a, DAY1, 10, 0.5))
    await repo.record_usage(a, row(a, DAY2, 20, 1.0))
    await repo.record_usage(b, row(b, DAY2 + 60, 5, 0.25))
    transcription = replace(
        row(b, DAY2, 0, 0.01),
        kind="transcription",
        response_id=None,
        audio_seconds_in=3.5,
        model="whisper-1",
    )
    await repo.record_usage(b, transcription)
    [session_a] = await queries.list_sessions(key_id="key_a")
    assert (session_a["responses"], session_a["input_tokens"], session_a["output_tokens"]) == (
        2,
        30,
        30,
    )
    assert session_a["cost_usd"] == pytest.approx(1.5)
    by_day = await queries.usage_report("day")
    assert [(d["group"], d["records"], d["responses"]) for d in by_day] == [
        ("2026-11-01", 1, 1),
        ("2026-11-02", 2, 1),
        ("2026-11-03", 1, 1),
    ]
    by_key = {r["group"]: r for r in await queries.usage_report("key")}
    assert by_key["key_a"]["cost_usd"] == pytest.approx(1.5)
    assert by_key["key_b"]["audio_seconds_in"] == pytest.approx(3.5)
    by_model = {r["group"]: r["records"] for r in await queries.usage_report("model")}
    assert by_model == {"gpt-realtime": 3, "whisper-1": 1}
    assert {r["group"] for r in await queries.usage_report("tenant")} == {"acme", None}
    assert {r["group"] for r in await queries.usage_report("user")} == {"u1", "u2"}
    assert {r["group"] for r in await queries.usage_report("session")} == {"sess_a", "sess_b"}
    window = await queries.usage_report("session", start_time=DAY2, end_time=DAY2 + 1)
    assert [(r["group"], r["records"]) for r in window] == [("sess_a", 1), ("sess_b", 1)]


async def test_a_session_with_its_end_usage_and_transcript(
    store: tuple[LedgerRepository, LedgerQueries],
) -> None:
    repo, queries = store
    s = info("sess_t")
    await repo.record_transcript(
        s, TranscriptEntry("sess_t", "item_1", "user", "Hello", DAY1, None)
    )
    await repo.record_usage(s, row(s, DAY1 + 1, 7, 0.1))
    await repo.record_transcript(
        s, TranscriptEntry("sess_t", "item_2", "assistant", "Hi!", DAY1 + 1, DAY1 + 86400)
    )
    await repo.end_session(
        s, SessionEnd("budget_exceeded", "budget_exceeded", "Budget x"), DAY1 + 5
    )
    got = await queries.session("sess_t")
    assert got is not None
    assert (got["end_reason"], got["end_code"], got["ended_at"]) == (
        "budget_exceeded",
        "budget_exceeded",
        DAY1 + 5,
    )
    assert [(t["role"], t["text"]) for t in got["transcript"]] == [
        ("user", "Hello"),
        ("assistant", "Hi!"),
    ]
    assert [u["input_text_tokens"] for u in got["usage"]] == [7]
    assert await queries.session("sess_missing") is None


async def test_a_session_that_ends_without_usage_still_has_a_row(
    store: tuple[LedgerRepository, LedgerQueries],
) -> None:
    repo, queries = store
    await repo.end_session(info("sess_quiet"), SessionEnd("client_closed"), DAY1)
    [quiet] = await queries.list_sessions(start_time=DAY1 - 1)
    assert (quiet["id"], quiet["end_reason"], quiet["responses"]) == (
        "sess_quiet",
        "client_closed",
        0,
    )


async def test_transcripts_expire_on_schedule(
    store: tuple[LedgerRepository, LedgerQueries],
) -> None:
    repo, queries = store
    s = info("sess_x")
    await repo.record_transcript(s, TranscriptEntry("sess_x", "i1", "user", "old", DAY1, DAY1 + 10))
    await repo.record_transcript(s, TranscriptEntry("sess_x", "i2", "user", "kept", DAY1, None))
    assert await repo.expire_transcripts(DAY1 + 9) == 0
    assert await repo.expire_transcripts(DAY1 + 10) == 1
    got = await queries.session("sess_x")
    assert got is not None and [t["text"] for t in got["transcript"]] == ["kept"]


async def test_deleting_a_session_and_a_user(store: tuple[LedgerRepository, LedgerQueries]) -> None:
    repo, queries = store
    for sid, user in (("s1", "u1"), ("s2", "u1"), ("s3", "u2")):
        s = info(sid, user=user)
        await repo.record_usage(s, row(s, DAY1, 1, 0.0))
        await repo.record_transcript(s, TranscriptEntry(sid, "i", "user", "words", DAY1, None))
    assert await repo.delete_session("s3") is True
    assert await repo.delete_session("s3") is False
    assert await queries.session("s3") is None
    counts = await repo.delete_user("u1")
    assert counts == {"usage": 2, "transcripts": 2, "sessions": 2, "client_secrets": 0}
    assert await queries.list_sessions() == []
    assert await queries.usage_report("session") == []
