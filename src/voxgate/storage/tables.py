"""Tables of the controls: API keys, tenants, client secrets, the audit log, and the change
stamp servers poll to see key and secret changes made elsewhere (the CLI, another replica).

Times are Unix seconds (float). JSON columns hold policies, scopes and bound sessions.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, String, Table

from .meta import metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("tenant", String(200), nullable=True, index=True),
    Column("prefix", String(40), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("policy", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

tenants = Table(
    "tenants",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("policy", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

client_secrets = Table(
    "client_secrets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("key_id", String(40), nullable=True, index=True),
    Column("tenant", String(200), nullable=True),
    Column("user_hash", String(64), nullable=True),
    # The effective session at minting, and the fields the minting request fixed.
    Column("session", JSON, nullable=False),
    Column("bound", JSON, nullable=False),
    Column("policy", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("revoked_at", Float, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", Float, nullable=False),
    Column("action", String(64), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("tenant", String(200), nullable=True),
    Column("user_hash", String(64), nullable=True),
    Column("session_id", String(64), nullable=True),
    Column("code", String(64), nullable=True),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_log_at", "at"),
)

# One row (id 1); `version` grows with every change to keys, tenants or client secrets.
control_stamp = Table(
    "control_stamp",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
)
