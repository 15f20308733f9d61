"""An in-memory `LedgerStore` (it can be made to wait or fail) and a `SessionLedger` builder,
for session tests of the usage ledger and budgets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxgate.control.budgets import BudgetMeter, Budgets
from voxgate.control.ledger import SessionInfo, SessionLedger, TranscriptEntry
from voxgate.control.observer import SessionEnd
from voxgate.control.shared import SharedState
from voxgate.control.usage import EMBEDDED_ENGINE, Price, PriceTable, UsageRecord
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.clock import VirtualClock


@dataclass(frozen=True)
class Owner:
    key_id: str | None = "key_1"
    tenant: str | None = None
    user_hash: str | None = None
    policy: Any = None


class MemoryLedgerStore:
    def __init__(self) -> None:
        self.usage: list[UsageRecord] = []
        self.transcripts: list[TranscriptEntry] = []
        self.ended: list[SessionEnd] = []
        # While set and not open, usage writes wait (a slow database).
        self.gate: asyncio.Event | None = None
        self.waiting = 0
        self.failures = 0  # the next this many usage writes raise

    async def record_usage(
        self,
        session: SessionInfo,
        usage: UsageRecord,
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")
        if self.gate is not None:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        self.usage.append(usage)
        self.transcripts += transcript

    async def record_transcript(self, session: SessionInfo, entry: TranscriptEntry) -> None:
        self.transcripts.append(entry)

    async def end_session(self, session: SessionInfo, end: SessionEnd, at: float) -> None:
        self.ended.append(end)


# A price for the embedded engine, so budgets in dollars have something to count.
TEST_PRICE = Price(input_text_per_1m_tokens=1_000_000, output_text_per_1m_tokens=1_000_000)


def session_ledger(
    conn: RealtimeConnection,
    store: MemoryLedgerStore,
    clock: VirtualClock,
    *,
    budgets: Budgets = Budgets(),
    shared: SharedState | None = None,
    owner: Owner = Owner(),
    retention_days: float | None = None,
    audit: list[tuple[str, str | None, dict[str, Any]]] | None = None,
) -> SessionLedger:
    """A ledger for ``conn``'s session in which one token costs one dollar."""
    info = SessionInfo(
        conn.session_id,
        owner.key_id,
        owner.tenant,
        owner.user_hash,
        conn.config.model,
        EMBEDDED_ENGINE,
        "websocket",
        clock.wall(),
    )
    prices = PriceTable({conn.config.model: TEST_PRICE})

    async def no_sleep(_: float) -> None:
        pass

    return SessionLedger(
        info,
        store,
        prices.priced,
        BudgetMeter(owner, budgets, shared),
        clock.wall,
        retention_days=retention_days,
        audit=(lambda *rec: audit.append(rec)) if audit is not None else None,
        _sleep=no_sleep,
    )
