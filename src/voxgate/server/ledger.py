"""The usage ledger as the server runs it: one `SessionLedger` per admitted session (the
session's observer), the price table from settings, and the scheduled expiry of transcripts.

With ``VOXGATE_LEDGER=false`` sessions get no observer at all: no usage rows, no transcripts,
and budgets are not enforced (the server warns at start-up when a policy sets one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..control.budgets import BudgetMeter, Budgets
from ..control.identity import Principal
from ..control.ledger import SessionInfo, SessionLedger
from ..control.usage import EMBEDDED_ENGINE, PriceTable
from ..protocol.connection import RealtimeConnection
from ..settings import Settings
from ..storage.ledger import LedgerRepository
from ..storage.ledger_queries import LedgerQueries
from .controls import Controls

log = logging.getLogger(__name__)
# How often expired transcript entries are deleted.
EXPIRY_INTERVAL_S = 3600.0


@dataclass
class Ledger:
    repo: LedgerRepository
    queries: LedgerQueries
    prices: PriceTable
    enabled: bool = True
    clock: Callable[[], float] = time.time
    _expiry: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, settings: Settings, engine: AsyncEngine) -> Ledger:
        ledger = cls(LedgerRepository(engine), LedgerQueries(engine), PriceTable(settings.prices))
        ledger.enabled = settings.ledger
        if not settings.ledger and Budgets.from_policy(settings.policy) != Budgets():
            log.warning("the ledger is off (VOXGATE_LEDGER=false): budgets are not enforced")
        ledger._expiry = asyncio.create_task(ledger._expire_forever(), name="ledger:expiry")
        return ledger

    def observer(
        self,
        controls: Controls,
        principal: Principal,
        connection: RealtimeConnection,
        transport: str,
        engine: str = EMBEDDED_ENGINE,
    ) -> SessionLedger | None:
        """The books of a session about to start (None when the ledger is off)."""
        if not self.enabled:
            return None
        info = SessionInfo(
            session_id=connection.session_id,
            key_id=principal.key_id,
            tenant=principal.tenant,
            user_hash=principal.user_hash,
            model=connection.config.model,
            engine=engine,
            transport=transport,
            started_at=controls.clock(),
            client_secret_id=principal.client_secret_id,
        )

        def audit(action: str, code: str | None, detail: dict[str, Any]) -> None:
            controls.audit(action, principal, code=code, session_id=info.session_id, **detail)

        return SessionLedger(
            info,
            self.repo,
            self.prices.priced,
            BudgetMeter(principal, Budgets.from_policy(principal.policy), controls.shared),
            controls.clock,
            retention_days=principal.policy.transcript_retention_days,
            audit=audit,
        )

    async def _expire_forever(self) -> None:
        while True:
            try:
                if expired := await self.repo.expire_transcripts(self.clock()):
                    log.info("deleted %d transcript entries past their retention", expired)
            except Exception:  # the database may be briefly away; try again next round
                log.warning("expiring transcripts failed", exc_info=True)
            await asyncio.sleep(EXPIRY_INTERVAL_S)

    async def aclose(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
