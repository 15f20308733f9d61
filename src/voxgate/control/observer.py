"""What a session tells the controls, once, as typed records.

`Session` calls a `SessionObserver` with the records the protocol core emits
(`ResponseFinished`, `UserInput`) and with the reason it ended; the ledger, budgets, audit
(and later metrics) observe these instead of parsing the events sent to the client.

Contract for the session:
- ``response_finished`` is awaited before that response's ``response.done`` is sent (the
  usage is durable first), off the main loop, so audio and other work go on meanwhile;
- ``user_input`` likewise holds back the transcription events that show billed usage;
- ``before_response`` runs beside a response that just started; a verdict that says a budget
  is exhausted cancels it;
- the returned `BudgetVerdict` says what the client must be told (and whether to end);
- ``session_ended`` is awaited once, after the client connection closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..protocol.commands import ResponseFinished, UserInput
from .budgets import BudgetVerdict


@dataclass(frozen=True, slots=True)
class SessionEnd:
    reason: str  # e.g. "client_closed", "expired", "budget_exceeded"
    error_code: str | None = None
    message: str = ""


class SessionObserver(Protocol):
    async def response_finished(self, record: ResponseFinished) -> BudgetVerdict: ...

    async def user_input(self, record: UserInput) -> BudgetVerdict: ...

    async def before_response(self) -> BudgetVerdict: ...

    async def session_ended(self, end: SessionEnd) -> None: ...
