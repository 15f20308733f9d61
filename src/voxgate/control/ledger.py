"""The usage ledger of one session: prices each record, writes it (durably, before the client
sees it), keeps the transcript per the retention policy, charges the budgets and audits
warnings, cut-offs and the session's end.

`LedgerStore` is the storage it needs (implemented in `voxgate.storage.ledger`).
A failed write is retried (`WRITE_ATTEMPTS`); if the store stays down the record is logged in
full at ERROR level (so it can be replayed from the log) and the session goes on: a database
outage must not take every live conversation down with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

from ..protocol.commands import ResponseFinished, UserInput
from .budgets import BudgetMeter, BudgetVerdict
from .observer import SessionEnd
from .usage import UsageRecord

log = logging.getLogger(__name__)
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_S = 0.2
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who a session belongs to and how it came in (the sessions table's metadata)."""

    session_id: str
    key_id: str | None
    tenant: str | None
    user_hash: str | None
    model: str
    engine: str
    transport: str  # "websocket" | "webrtc" | …
    started_at: float
    client_secret_id: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    session_id: str
    item_id: str
    role: Literal["user", "assistant"]
    text: str
    at: float
    expires_at: float | None  # None: kept until deleted


class LedgerStore(Protocol):
    async def record_usage(
        self,
        session: SessionInfo,
        usage: UsageRecord,
        transcript: Sequence[TranscriptEntry] = (),
    ) -> None:
        """Write one usage row, the session's running totals and the transcript entries of
        the same moment, in one transaction; durable on return."""
        ...

    async def record_transcript(self, session: SessionInfo, entry: TranscriptEntry) -> None: ...

    async def end_session(self, session: SessionInfo, end: SessionEnd, at: float) -> None: ...


# (action, code, detail): one audit record about this session.
AuditHook = Callable[[str, str | None, dict[str, Any]], None]


@dataclass
class SessionLedger:
    """A `SessionObserver` that keeps the books of one session."""

    info: SessionInfo
    store: LedgerStore
    price: Callable[[UsageRecord], UsageRecord]
    meter: BudgetMeter
    wall: Callable[[], float]
    # transcript_retention_days: 0 keeps no transcript, None keeps it until deleted.
    retention_days: float | None = None
    audit: AuditHook | None = None
    _sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def _base(self, at: float) -> UsageRecord:
        i = self.info
        return UsageRecord(
            i.session_id, None, "response", i.key_id, i.tenant, i.user_hash, i.model, i.engine, at
        )

    async def response_finished(self, record: ResponseFinished) -> BudgetVerdict:
        at = self.wall()
        usage = self.price(
            UsageRecord.of_response(self._base(at), record.response_id, record.model, record.usage)
        )
        said = [self._entry(item_id, "assistant", text, at) for item_id, text in record.messages]
        await self._write(usage, said)
        return self._audited(await self.meter.charge(usage.cost_usd, usage.total_tokens, at))

    async def user_input(self, record: UserInput) -> BudgetVerdict:
        at = self.wall()
        entry = self._entry(record.item_id, "user", record.text, at)
        if record.transcription_model is None:  # no usage to bill: only the words
            if entry is not None:
                await self._save_transcript(entry)
            return BudgetVerdict()
        transcribed = replace(
            self._base(at),
            kind="transcription",
            model=record.transcription_model,
            audio_seconds_in=record.audio_seconds,
        )
        usage = self.price(transcribed)
        await self._write(usage, [entry])
        return self._audited(await self.meter.charge(usage.cost_usd, usage.total_tokens, at))

    async def before_response(self) -> BudgetVerdict:
        # Only a cut-off matters here: the remaining budget is reported after the response
        # (a report from this check could arrive after the response's own, and look stale).
        verdict = await self.meter.check(self.wall())
        return self._audited(replace(verdict, rate_limits=None))

    async def session_ended(self, end: SessionEnd) -> None:
        # (The end itself is audited where the session is released, with its leases.)
        await self._retrying(
            "session end", lambda: self.store.end_session(self.info, end, self.wall())
        )

    def _audited(self, verdict: BudgetVerdict) -> BudgetVerdict:
        if self.audit is not None:
            for notice in verdict.warnings:
                self.audit("budget_warning", "budget_warning", {"budget": notice.budget})
            if verdict.exceeded is not None:
                budget = verdict.exceeded.budget
                self.audit("budget_exceeded", "budget_exceeded", {"budget": budget})
        return verdict

    def _entry(
        self, item_id: str, role: Literal["user", "assistant"], text: str, at: float
    ) -> TranscriptEntry | None:
        """A transcript entry, or None when there are no words or the policy keeps none."""
        if not text or self.retention_days == 0:
            return None
        expires = None if self.retention_days is None else at + self.retention_days * DAY_S
        return TranscriptEntry(self.info.session_id, item_id, role, text, at, expires)

    async def _save_transcript(self, entry: TranscriptEntry) -> None:
        await self._retrying("transcript", lambda: self.store.record_transcript(self.info, entry))

    async def _write(self, usage: UsageRecord, said: list[TranscriptEntry | None]) -> None:
        entries = [e for e in said if e is not None]
        if not await self._retrying(
            "usage", lambda: self.store.record_usage(self.info, usage, entries)
        ):
            log.error("usage row NOT recorded (replay it): %s", asdict(usage))

    async def _retrying(self, what: str, write: Callable[[], Awaitable[None]]) -> bool:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await write()
                return True
            except Exception:
                log.warning(
                    "writing the %s of session %s failed (attempt %d of %d)",
                    what,
                    self.info.session_id,
                    attempt,
                    WRITE_ATTEMPTS,
                    exc_info=True,
                )
                if attempt < WRITE_ATTEMPTS:
                    await self._sleep(WRITE_BACKOFF_S * attempt)
        return False
