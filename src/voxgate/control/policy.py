"""Governance policies: what a credential may do and for how long.

A policy exists at four levels (server default, tenant, API key, client secret); the
strictest value of each field wins (`Policy.strictest`). Every field is optional and None
means "no limit at this level".
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_NUMBER_FIELDS = (
    "max_session_seconds",
    "idle_timeout_seconds",
    "max_concurrent_sessions",
    "max_concurrent_sessions_per_user",
    "budget_usd_per_session",
    "budget_usd_per_user_per_day",
    "budget_usd_per_day",
    "budget_usd_per_month",
    "budget_tokens_per_session",
    "budget_tokens_per_day",
    "client_secret_uses",
    "client_secret_max_ttl_seconds",
    "client_secrets_per_minute",
    "transcript_retention_days",
)
_LIST_FIELDS = ("allowed_models", "allowed_voices", "allowed_tools")
# What a relayed session does when its upstream fails, strictest first: end it, move to the
# next upstream, or go on on the embedded pipeline (docs/relay.md).
Fallback = Literal["local", "next", "none"]
_FALLBACK_ORDER: tuple[Fallback, ...] = ("none", "next", "local")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_session_seconds: float | None = Field(None, gt=0)
    idle_timeout_seconds: float | None = Field(None, gt=0)
    max_concurrent_sessions: int | None = Field(None, ge=0)
    max_concurrent_sessions_per_user: int | None = Field(None, ge=0)
    budget_usd_per_session: float | None = Field(None, ge=0)
    budget_usd_per_user_per_day: float | None = Field(None, ge=0)
    budget_usd_per_day: float | None = Field(None, ge=0)
    budget_usd_per_month: float | None = Field(None, ge=0)
    budget_tokens_per_session: int | None = Field(None, ge=0)
    budget_tokens_per_day: int | None = Field(None, ge=0)
    # Names; "*" and other shell-style wildcards match several ("gpt-*").
    allowed_models: list[str] | None = None
    allowed_voices: list[str] | None = None
    allowed_tools: list[str] | None = None
    client_secret_uses: int | None = Field(None, ge=1)
    client_secret_max_ttl_seconds: int | None = Field(None, ge=10, le=7200)
    client_secrets_per_minute: int | None = Field(None, ge=0)
    # 0: store no transcripts; None: keep them forever.
    transcript_retention_days: float | None = Field(None, ge=0)
    # None: "local" where the embedded engines run (see _FALLBACK_ORDER).
    fallback: Fallback | None = None

    @classmethod
    def strictest(cls, *policies: Policy | None) -> Policy:
        """One policy holding, field by field, the strictest value of ``policies``:
        the smallest number (None is no limit, so the loosest) and the intersection of
        allowed lists (None allows everything)."""
        merged: dict[str, Any] = {}
        present = [p for p in policies if p is not None]
        for name in _NUMBER_FIELDS:
            values = [getattr(p, name) for p in present if getattr(p, name) is not None]
            merged[name] = min(values) if values else None
        for name in _LIST_FIELDS:
            lists = [getattr(p, name) for p in present if getattr(p, name) is not None]
            result: list[str] | None = None
            for patterns in lists:
                result = list(patterns) if result is None else _intersect(result, patterns)
            merged[name] = result
        fallbacks = {p.fallback for p in present if p.fallback is not None}
        merged["fallback"] = next((f for f in _FALLBACK_ORDER if f in fallbacks), None)
        return cls(**merged)

    def allows(self, field: str, name: str) -> bool:
        """Whether ``name`` is in the allowed list ``field`` (None allows everything)."""
        patterns: list[str] | None = getattr(self, field)
        return patterns is None or allowed(patterns, name)

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (what an operator wrote), for storage and listings."""
        return self.model_dump(mode="json", exclude_none=True)


def allowed(patterns: list[str], name: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def _intersect(a: list[str], b: list[str]) -> list[str]:
    """Patterns matching what both lists allow: a pattern of one list that the other list
    matches is kept (so ["*"] ∩ ["gpt-*"] = ["gpt-*"], ["gpt-*"] ∩ ["gpt-4o"] = ["gpt-4o"])."""
    out: list[str] = []
    for pattern in [*a, *b]:
        other = b if pattern in a else a
        if allowed(other, pattern) and pattern not in out:
            out.append(pattern)
    return out
