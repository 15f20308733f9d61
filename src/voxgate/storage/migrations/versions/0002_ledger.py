"""The usage ledger: sessions, usage rows and transcripts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ledger"
down_revision = "0001_controls"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("user_hash", sa.String(64), nullable=True),
        sa.Column("client_secret_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("transport", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.Column("end_code", sa.String(64), nullable=True),
        sa.Column("end_message", sa.Text(), nullable=True),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    for column in ("started_at", "key_id", "tenant", "user_hash"):
        op.create_index(f"ix_sessions_{column}", "sessions", [column])
    op.create_table(
        "usage",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("response_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("tenant", sa.String(200), nullable=True),
        sa.Column("user_hash", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("input_text_tokens", sa.Integer(), nullable=False),
        sa.Column("input_audio_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("output_text_tokens", sa.Integer(), nullable=False),
        sa.Column("output_audio_tokens", sa.Integer(), nullable=False),
        sa.Column("audio_seconds_in", sa.Float(), nullable=False),
        sa.Column("audio_seconds_out", sa.Float(), nullable=False),
        sa.Column("characters_spoken", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage"),
    )
    for column in ("at", "session_id", "user_hash"):
        op.create_index(f"ix_usage_{column}", "usage", [column])
    op.create_table(
        "transcripts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("user_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
    )
    for column in ("session_id", "expires_at", "user_hash"):
        op.create_index(f"ix_transcripts_{column}", "transcripts", [column])


def downgrade() -> None:
    for table in ("transcripts", "usage", "sessions"):
        op.drop_table(table)
