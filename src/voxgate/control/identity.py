"""Who is asking: the identity a credential resolves to, and the hashing of end users."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from .policy import Policy

Scope = Literal["realtime", "client_secrets", "admin"]
SCOPES: frozenset[str] = frozenset({"realtime", "client_secrets", "admin"})
DEFAULT_SCOPES: frozenset[str] = frozenset({"realtime"})


def hash_user(safety_identifier: str) -> str:
    """The end user as stored and logged: never the raw safety identifier."""
    return hashlib.sha256(safety_identifier.encode("utf-8")).hexdigest()


def hash_secret(value: str) -> str:
    """How API keys and client secrets are stored and looked up (they are long random
    tokens, so a plain digest cannot be reversed by guessing)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``key_id`` None with every scope is development mode."""

    key_id: str | None
    key_prefix: str | None
    tenant: str | None
    scopes: frozenset[str]
    user_hash: str | None
    client_secret_id: str | None
    policy: Policy
    # The session fields a client secret fixed at minting (None: not a client secret).
    bound: dict[str, Any] | None = field(default=None)

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def label(self) -> str:
        """How logs name the caller: ids and prefixes, never a credential."""
        if self.client_secret_id is not None:
            return f"secret {self.client_secret_id} of key {self.key_id or '-'}"
        return f"key {self.key_id}" if self.key_id is not None else "development mode"

    def may_act_on(self, owner: Principal | None) -> bool:
        """Whether this caller may hang up or attach to a call ``owner`` created: its own
        key (a client secret: its own secret), a key of the same tenant with the realtime
        scope, or an admin key."""
        if owner is None or self.has("admin"):
            return True
        if self.client_secret_id is not None:
            return self.client_secret_id == owner.client_secret_id
        if self.key_id is not None and self.key_id == owner.key_id:
            return True
        return self.tenant is not None and self.tenant == owner.tenant and self.has("realtime")
