"""The controls a server runs with: the store's repositories, the authenticator, the audit
recorder, the shared state, and the watcher that ends sessions whose credential was revoked.
Built at start-up from settings; closed at shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.audit import AuditRecord
from ..control.identity import Principal
from ..control.shared import MemorySharedState, SharedState
from ..session.manager import SessionManager
from ..settings import Settings
from ..storage.admin import Admin
from ..storage.audit import AuditRecorder, AuditRepository
from ..storage.db import create_engine, upgrade
from ..storage.keys import KeyRepository, TenantRepository
from ..storage.secrets import SecretRepository, SecretWriter
from .auth import Authenticator
from .revocation import RevocationWatcher


@dataclass
class Controls:
    engine: AsyncEngine
    keys: KeyRepository
    tenants: TenantRepository
    secrets: SecretRepository
    audit_log: AuditRepository
    recorder: AuditRecorder
    shared: SharedState
    auth: Authenticator
    watcher: RevocationWatcher
    admin: Admin
    # Minted secrets are written through this (batched commits).
    secret_writer: SecretWriter
    clock: Callable[[], float] = time.time

    @classmethod
    async def start(
        cls, settings: Settings, manager: SessionManager, shared: SharedState | None = None
    ) -> Controls:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        keys, secrets = KeyRepository(engine), SecretRepository(engine)
        tenants, audit_log = TenantRepository(engine), AuditRepository(engine)
        recorder = AuditRecorder(audit_log)
        recorder.start()
        shared = shared or MemorySharedState()
        auth = Authenticator(
            keys, tenants, secrets, static_keys=settings.api_keys, server_policy=settings.policy
        )
        watcher = RevocationWatcher(keys, secrets, manager, auth.refresh)


        def revoked(kind: str, ident: str) -> None:
            if kind == "key":
                auth.forget_key(ident, time.time())
            watcher.revoked(kind, ident)

        shared.on_revoke(revoked)
        await watcher.start()
        writer = SecretWriter(secrets)
        writer.start()
        admin = Admin(engine, recorder)
        return cls(
            engine,
            keys,
            tenants,
            secrets,
            audit_log,
            recorder,
            shared,
            auth,
            watcher,
            admin,
            writer,
        )

    def audit(
        self,
        action: str,
        principal: Principal | None = None,
        *,
        code: str | None = None,
        session_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Record a decision (never blocks; written in the background)."""
        if principal is not None and principal.client_secret_id is not None:
            detail.setdefault("client_secret_id", principal.client_secret_id)
        key_id = principal.key_id if principal else detail.pop("key_id", None) or None
        self.recorder.record(
            AuditRecord(
                action,
                key_id=key_id,
                tenant=principal.tenant if principal else None,
                user_hash=principal.user_hash if principal else None,
                session_id=session_id,
                code=code,
                detail=detail,
                at=self.clock(),
            )
        )

    async def aclose(self) -> None:
        await self.watcher.aclose()
        await self.secret_writer.aclose()
        await self.recorder.aclose()
        await self.shared.aclose()
        await self.engine.dispose()
