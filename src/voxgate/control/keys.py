"""API keys and tenants as the controls see them (the store keeps only hashes)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .identity import hash_secret
from .policy import Policy

KEY_PREFIX = "vx-"
# How much of a key listings and logs show.
SHOWN_CHARS = 10


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    tenant: str | None
    prefix: str
    scopes: frozenset[str]
    policy: Policy
    created_at: float
    revoked_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The listing shape (never the key itself)."""
        return {
            "id": self.id,
            "name": self.name,
            "tenant": self.tenant,
            "scopes": sorted(self.scopes),
            "policy": self.policy.to_json(),
            "prefix": self.prefix,
            "created_at": int(self.created_at),
            "revoked_at": int(self.revoked_at) if self.revoked_at is not None else None,
        }


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the value (shown once), its hash and its listed prefix."""

    id: str
    value: str
    hash: str
    prefix: str


def generate_key() -> NewKey:
    value = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(
        id="key_" + secrets.token_hex(8),
        value=value,
        hash=hash_secret(value),
        prefix=shown(value),
    )


def shown(credential: str) -> str:
    """The part of a credential that may appear in listings and logs."""
    return credential[:SHOWN_CHARS] + "…"


def static_key_id(value: str) -> str:
    """A stable id for a key given in VOXGATE_API_KEYS (derived from its hash)."""
    return "static_" + hash_secret(value)[:12]
