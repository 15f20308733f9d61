"""Tables of the usage ledger: one row per session, one per usage record (a response or an
input transcription), one per transcript entry. Times are Unix seconds (float).

`sessions` keeps running totals, updated in the same transaction as each usage row, so a
session's cost is known without summing its rows; the rows stay the source of truth.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from .meta import metadata

_ID = BigInteger().with_variant(Integer, "sqlite")

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(40), nullable=True),
    Column("tenant", String(200), nullable=True),
    Column("user_hash", String(64), nullable=True),
    Column("client_secret_id", String(64), nullable=True),
    Column("model", String(200), nullable=False),
    Column("engine", String(64), nullable=False),
    Column("transport", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("end_reason", String(64), nullable=True),
    Column("end_code", String(64), nullable=True),
    Column("end_message", Text, nullable=True),
    Column("responses", Integer, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Index("ix_sessions_started_at", "started_at"),
    Index("ix_sessions_key_id", "key_id"),
    Index("ix_sessions_tenant", "tenant"),
    Index("ix_sessions_user_hash", "user_hash"),
)

usage = Table(
    "usage",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False),
    Column("response_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("tenant", String(200), nullable=True),
    Column("user_hash", String(64), nullable=True),
    Column("model", String(200), nullable=False),
    Column("engine", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("input_text_tokens", Integer, nullable=False),
    Column("input_audio_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("output_text_tokens", Integer, nullable=False),
    Column("output_audio_tokens", Integer, nullable=False),
    Column("audio_seconds_in", Float, nullable=False),
    Column("audio_seconds_out", Float, nullable=False),
    Column("characters_spoken", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Index("ix_usage_at", "at"),
    Index("ix_usage_session_id", "session_id"),
    Index("ix_usage_user_hash", "user_hash"),
)

transcripts = Table(
    "transcripts",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("user_hash", String(64), nullable=True),
    Index("ix_transcripts_session_id", "session_id"),
    Index("ix_transcripts_expires_at", "expires_at"),
    Index("ix_transcripts_user_hash", "user_hash"),
)
