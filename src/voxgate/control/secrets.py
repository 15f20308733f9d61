"""Client secrets: short-lived credentials a backend mints for a browser or phone, bound to
the minting key's identity and policy, to the end user, to session fields and to a number
of sessions. The wire shape is the hosted API's (``POST /v1/realtime/client_secrets``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .identity import hash_secret

SECRET_PREFIX = "ek_"
MIN_TTL_S = 10
MAX_TTL_S = 7200
DEFAULT_TTL_S = 600
DEFAULT_USES = 1


class MintError(Exception):
    """A minting request that cannot be served; carries the OpenAI error fields."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ClientSecret:
    id: str
    key_id: str | None
    tenant: str | None
    user_hash: str | None
    session: dict[str, Any]
    bound: dict[str, Any]
    policy: dict[str, Any]
    created_at: float
    expires_at: float
    max_uses: int
    uses: int = 0
    revoked_at: float | None = None


@dataclass(frozen=True)
class NewSecret:
    id: str
    value: str
    hash: str


def generate_secret() -> NewSecret:
    value = SECRET_PREFIX + secrets.token_urlsafe(32)
    return NewSecret(id="cs_" + secrets.token_hex(8), value=value, hash=hash_secret(value))


def is_client_secret(credential: str) -> bool:
    return credential.startswith(SECRET_PREFIX)


def ttl_of(expires_after: Any, max_ttl_s: int | None) -> int:
    """The lifetime asked for in ``expires_after``, checked like the hosted API does."""
    if expires_after is None:
        seconds = DEFAULT_TTL_S
    else:
        if not isinstance(expires_after, dict):
            raise MintError("'expires_after' must be an object.", "invalid_type", "expires_after")
        unknown = set(expires_after) - {"anchor", "seconds"}
        if unknown:
            raise MintError(
                f"Unknown parameter: 'expires_after.{sorted(unknown)[0]}'.",
                "unknown_parameter",
                f"expires_after.{sorted(unknown)[0]}",
            )
        anchor = expires_after.get("anchor", "created_at")
        if anchor != "created_at":
            raise MintError(
                "'expires_after.anchor' must be 'created_at'.",
                "invalid_value",
                "expires_after.anchor",
            )
        seconds = expires_after.get("seconds", DEFAULT_TTL_S)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise MintError(
                "'expires_after.seconds' must be an integer.",
                "invalid_type",
                "expires_after.seconds",
            )
        if not MIN_TTL_S <= seconds <= MAX_TTL_S:
            raise MintError(
                f"'expires_after.seconds' must be between {MIN_TTL_S} and {MAX_TTL_S}; "
                f"got {seconds}.",
                "invalid_value",
                "expires_after.seconds",
            )
    if max_ttl_s is not None and seconds > max_ttl_s:
        raise MintError(
            f"'expires_after.seconds' ({seconds}) is above this key's policy limit "
            f"client_secret_max_ttl_seconds={max_ttl_s}.",
            "invalid_value",
            "expires_after.seconds",
        )
    return int(seconds)
