"""Operator actions on keys, tenants and client secrets, shared by the CLI (which works on
the store directly) and the admin REST routes. Every change is audited."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.audit import AuditRecord, AuditSink
from ..control.identity import DEFAULT_SCOPES, SCOPES
from ..control.keys import ApiKey, generate_key
from ..control.policy import Policy
from ..control.secrets import ClientSecret
from .keys import KeyRepository, TenantRepository
from .secrets import SecretRepository


class AdminError(Exception):
    """A request an operator must fix; carries the OpenAI error fields."""

    def __init__(self, message: str, code: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status = status


def parse_scopes(scopes: Any) -> frozenset[str]:
    if scopes is None:
        return DEFAULT_SCOPES
    if isinstance(scopes, str):
        scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise AdminError("'scopes' must be a list of scope names.", "invalid_type", "scopes")
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise AdminError(
            f"Unknown scope {unknown[0]!r}; scopes are {', '.join(sorted(SCOPES))}.",
            "invalid_value",
            "scopes",
        )
    return frozenset(scopes)


def parse_policy(policy: Any) -> Policy:
    from pydantic import ValidationError

    if policy is None:
        return Policy()
    if not isinstance(policy, dict):
        raise AdminError("'policy' must be a JSON object.", "invalid_type", "policy")
    try:
        return Policy.model_validate(policy)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AdminError(
            f"Invalid policy field '{where}': {first['msg']}.", "invalid_value", f"policy.{where}"
        ) from None


@dataclass
class Admin:
    engine: AsyncEngine
    audit: AuditSink
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.keys = KeyRepository(self.engine)
        self.tenants = TenantRepository(self.engine)
        self.secrets = SecretRepository(self.engine)

    def _record(self, action: str, actor: str | None, **fields: Any) -> None:
        detail = fields.pop("detail", {})
        if actor is not None:
            detail["actor"] = actor
        self.audit.record(AuditRecord(action, detail=detail, at=self.clock(), **fields))

    async def create_key(
        self,
        *,
        name: Any,
        tenant: Any = None,
        scopes: Any = None,
        policy: Any = None,
        actor: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its value (shown this once)."""
        if not isinstance(name, str) or not name.strip():
            raise AdminError(
                "Missing required parameter: 'name'.", "missing_required_parameter", "name"
            )
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise AdminError("'tenant' must be a non-empty string.", "invalid_type", "tenant")
        new = generate_key()
        key = await self.keys.create(
            new,
            name=name,
            tenant=tenant,
            scopes=parse_scopes(scopes),
            policy=parse_policy(policy),
            now=self.clock(),
        )
        self._record(
            "key_created",
            actor,
            key_id=key.id,
            tenant=key.tenant,
            detail={"scopes": sorted(key.scopes), "policy": key.policy.to_json()},
        )
        return key, new.value

    async def update_key(
        self, key_id: str, *, policy: Any = None, scopes: Any = None, actor: str | None = None
    ) -> ApiKey:
        if policy is None and scopes is None:
            raise AdminError(
                "Give 'policy' and/or 'scopes' to change.", "missing_required_parameter", "policy"
            )
        key = await self.keys.update(
            key_id,
            policy=parse_policy(policy) if policy is not None else None,
            scopes=parse_scopes(scopes) if scopes is not None else None,
        )
        if key is None:
            raise _no_key(key_id)
        self._record(
            "key_updated",
            actor,
            key_id=key.id,
            tenant=key.tenant,
            detail={"scopes": sorted(key.scopes), "policy": key.policy.to_json()},
        )
        return key

    async def revoke_key(self, key_id: str, actor: str | None = None) -> ApiKey:
        key = await self.keys.revoke(key_id, self.clock())
        if key is None:
            raise _no_key(key_id)
        self._record("key_revoked", actor, key_id=key.id, tenant=key.tenant)
        return key

    async def set_tenant(self, name: str, policy: Any, actor: str | None = None) -> Policy:
        parsed = parse_policy(policy)
        await self.tenants.set(name, parsed, self.clock())
        self._record("tenant_set", actor, tenant=name, detail={"policy": parsed.to_json()})
        return parsed

    async def revoke_secret(self, secret_id: str, actor: str | None = None) -> ClientSecret:
        secret = await self.secrets.revoke(secret_id, self.clock())
        if secret is None:
            raise AdminError(
                f"No client secret with id '{secret_id}'.", "not_found", "client_secret_id", 404
            )
        self._record(
            "client_secret_revoked",
            actor,
            key_id=secret.key_id,
            tenant=secret.tenant,
            user_hash=secret.user_hash,
            detail={"client_secret_id": secret.id},
        )
        return secret


def _no_key(key_id: str) -> AdminError:
    return AdminError(f"No API key with id '{key_id}'.", "not_found", "id", 404)
