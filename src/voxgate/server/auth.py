"""Credentials → principals: API keys from the store (read fresh, so a revocation or a
policy change applies to the next request), static keys from VOXGATE_API_KEYS, client
secrets (one use taken per session), and development mode when no key of any kind exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..control.identity import SCOPES, Principal, hash_secret, hash_user
from ..control.keys import ApiKey, shown, static_key_id
from ..control.policy import Policy
from ..control.secrets import ClientSecret, is_client_secret
from ..storage.keys import KeyRepository, TenantRepository
from ..storage.secrets import SecretRepository
from .refusal import Refused, forbidden, unauthorized

SECRET_SCOPES = frozenset({"realtime"})


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    # The client secret's bound session, applied before anything else (None: not a secret).
    session: dict[str, Any] | None = None
    # A use of this secret was taken: give it back if admission then refuses.
    secret_used: str | None = None


class Authenticator:
    def __init__(
        self,
        keys: KeyRepository,
        tenants: TenantRepository,
        secrets: SecretRepository,
        *,
        static_keys: list[str],
        server_policy: Policy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.tenants = tenants
        self.secrets = secrets
        self.server_policy = server_policy
        self.clock = clock
        self.static = {
            hash_secret(k): ApiKey(
                static_key_id(k), "VOXGATE_API_KEYS", None, shown(k), SCOPES, Policy(), 0.0
            )
            for k in static_keys
        }
        self._static_by_id = {k.id: k for k in self.static.values()}
        self._keys_exist = bool(static_keys)
        # The store's keys (by hash) and tenant policies, reloaded whenever the store's change
        # stamp moves (see RevocationWatcher): admission and minting read no key from the
        # database. A key not in the cache yet (created a moment ago) is looked up.
        self._keys: dict[str, ApiKey] = {}
        self._tenants: dict[str, Policy] = {}

    async def refresh(self) -> None:
        """Reload keys and tenant policies from the store."""
        self._keys = await self.keys.by_hash()
        self._tenants = await self.tenants.all()
        self._keys_exist = self._keys_exist or bool(self._keys)

    def forget_key(self, key_id: str, revoked_at: float) -> None:
        """A revocation announced before the store's stamp was polled."""
        for hash_, key in self._keys.items():
            if key.id == key_id and key.revoked_at is None:
                self._keys[hash_] = replace(key, revoked_at=revoked_at)

    async def dev_mode(self) -> bool:
        """No key of any kind (revoked ones count: revoking every key does not open the
        server). Read from the cache, which the first key created elsewhere reaches within
        a poll of the store; keys are never deleted, so once False it stays False."""
        return not self._keys_exist

    async def authenticate(
        self, credential: str | None, safety_identifier: str | None, *, use: bool = True
    ) -> Authenticated:
        """Who this is; raises Refused. ``use``: a client secret opens a session with this
        (one of its uses is taken); otherwise it only identifies its holder."""
        user = hash_user(safety_identifier) if safety_identifier else None
        if credential and is_client_secret(credential):
            return await self._secret(credential, use)
        key = await self._key(credential) if credential else None
        if key is not None:
            return Authenticated(await self.principal_of(key, user))
        if await self.dev_mode():
            policy = self.server_policy
            return Authenticated(Principal(None, None, None, SCOPES, user, None, policy))
        if not credential:
            raise unauthorized(
                "invalid_api_key",
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            )
        raise unauthorized("invalid_api_key", f"Incorrect API key provided: {shown(credential)}.")

    async def _key(self, credential: str) -> ApiKey | None:
        hash_ = hash_secret(credential)
        key = self.static.get(hash_) or self._keys.get(hash_)
        # Not cached: created a moment ago, or no key at all. In development mode anything
        # goes, so only keyed servers ask the store.
        if key is None and self._keys_exist and (key := await self.keys.find(hash_)):
            self._keys[hash_] = key
        if key is not None:
            self._keys_exist = True
            if key.revoked_at is not None:
                raise unauthorized(
                    "api_key_revoked",
                    f"The API key {key.prefix} ({key.id}) has been revoked.",
                    key_id=key.id,
                )
        return key

    async def key_by_id(self, key_id: str | None) -> ApiKey | None:
        if key_id is None:
            return None
        cached = self._static_by_id.get(key_id) or next(
            (k for k in self._keys.values() if k.id == key_id), None
        )
        return cached or await self.keys.get(key_id)

    async def policy_of(self, key: ApiKey | None, *more: Policy) -> Policy:
        tenant = self._tenants.get(key.tenant) if key and key.tenant else None
        return Policy.strictest(self.server_policy, tenant, key.policy if key else None, *more)

    async def principal_of(self, key: ApiKey, user_hash: str | None) -> Principal:
        policy = await self.policy_of(key)
        return Principal(key.id, key.prefix, key.tenant, key.scopes, user_hash, None, policy)

    async def _secret(self, credential: str, use: bool) -> Authenticated:
        hash_, now = hash_secret(credential), self.clock()
        if use:
            outcome, secret = await self.secrets.use(hash_, now)
        else:
            secret = await self.secrets.find(hash_)
            outcome = "unknown" if secret is None else "revoked" if secret.revoked_at else "ok"
        if secret is None or outcome == "unknown":
            raise unauthorized(
                "invalid_api_key",
                "Incorrect client secret provided: it was never issued by this server (or it "
                "was altered). Mint one with POST /v1/realtime/client_secrets.",
            )
        if outcome != "ok":
            raise _secret_refusal(outcome, secret)
        key = await self.key_by_id(secret.key_id)
        if key is not None and key.revoked_at is not None:
            raise unauthorized(
                "api_key_revoked",
                f"The API key {key.prefix} that minted this client secret has been revoked.",
                key_id=key.id,
                client_secret_id=secret.id,
            )
        policy = await self.policy_of(key, Policy.model_validate(secret.policy))
        principal = Principal(
            secret.key_id,
            key.prefix if key else None,
            secret.tenant,
            SECRET_SCOPES,
            secret.user_hash,
            secret.id,
            policy,
            bound=secret.bound,
        )
        return Authenticated(principal, secret.bound, secret.id if use else None)


def _secret_refusal(outcome: str, secret: ClientSecret) -> Refused:
    subject = {"client_secret_id": secret.id, "key_id": secret.key_id or ""}
    if outcome == "expired":
        return unauthorized(
            "client_secret_expired",
            f"The client secret {secret.id} expired at {int(secret.expires_at)}; mint a new one.",
            **subject,
        )
    if outcome == "revoked":
        return unauthorized(
            "client_secret_revoked", f"The client secret {secret.id} has been revoked.", **subject
        )
    return forbidden(
        "client_secret_used",
        f"The client secret {secret.id} has already opened its {secret.max_uses} "
        "session(s) (policy client_secret_uses); mint a new one.",
        **subject,
    )


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has(scope):
        raise forbidden(
            "insufficient_scope",
            f"This credential ({principal.label}) lacks the '{scope}' scope.",
        )
