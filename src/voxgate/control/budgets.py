"""Budgets: how much a session, a user, a tenant may spend, in dollars and in tokens.

Per-session budgets are counted in the session's own `BudgetMeter`. Per-day, per-month and
per-user-per-day budgets are counters in `SharedState`, so every replica adds to one total;
a counter's name carries its period ("…:day:2026-11-28"), so it resets by itself when the
period turns over (UTC), and expires shortly after.

Whose spending a per-day or per-month budget counts: the tenant's when the credential has a
tenant, else the key's, else (development mode, static keys) the whole server's.

The rules, checked after every response and before starting the next:
- at `WARN_AT` (80 %) of a budget the session is warned once per budget;
- at 100 % the session is cut off, naming the budget;
- ``rate_limits.updated`` reports the tightest token budget's remainder.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .shared import SharedState

WARN_AT = 0.8
DAY_S = 86400.0
# Counters outlive their period by this much (a replica whose clock lags still finds them).
_TTL_MARGIN_S = 3600.0


@dataclass(frozen=True, slots=True)
class Budgets:
    """The budget fields of a policy (None: no limit)."""

    usd_per_session: float | None = None
    tokens_per_session: int | None = None
    usd_per_user_per_day: float | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    tokens_per_day: int | None = None

    @classmethod
    def from_policy(cls, policy: Any) -> Budgets:
        """Read the ``budget_*`` fields of a `Policy` (any object with those attributes)."""
        return cls(
            usd_per_session=getattr(policy, "budget_usd_per_session", None),
            tokens_per_session=getattr(policy, "budget_tokens_per_session", None),
            usd_per_user_per_day=getattr(policy, "budget_usd_per_user_per_day", None),
            usd_per_day=getattr(policy, "budget_usd_per_day", None),
            usd_per_month=getattr(policy, "budget_usd_per_month", None),
            tokens_per_day=getattr(policy, "budget_tokens_per_day", None),
        )

    @property
    def shared(self) -> bool:
        """Whether any budget is counted across sessions."""
        return any(
            v is not None
            for v in (
                self.usd_per_user_per_day,
                self.usd_per_day,
                self.usd_per_month,
                self.tokens_per_day,
            )
        )


class BudgetOwner(Protocol):
    """Whose spending counts (a `Principal` satisfies it)."""

    @property
    def key_id(self) -> str | None: ...

    @property
    def tenant(self) -> str | None: ...

    @property
    def user_hash(self) -> str | None: ...

    @property
    def policy(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class BudgetNotice:
    budget: str  # the policy field, e.g. "budget_usd_per_day"
    message: str


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """What the session must tell the client (and do) after a charge or a check."""

    warnings: tuple[BudgetNotice, ...] = ()
    exceeded: BudgetNotice | None = None
    # Entries of ``rate_limits.updated``; None: no token budget to report.
    rate_limits: list[dict[str, Any]] | None = None


OK = BudgetVerdict()


@dataclass(frozen=True, slots=True)
class _Line:
    budget: str
    limit: float
    spent: float
    unit: str  # "usd" | "tokens"
    reset_s: float | None  # seconds until the counter resets; None: it never does


def scope_of(owner: BudgetOwner) -> str:
    if owner.tenant is not None:
        return f"tenant:{owner.tenant}"
    if owner.key_id is not None:
        return f"key:{owner.key_id}"
    return "server"


@dataclass(frozen=True, slots=True)
class _Period:
    day: str
    month: str
    day_left_s: float
    month_left_s: float

    @classmethod
    def at(cls, now: float) -> _Period:
        t = datetime.fromtimestamp(now, UTC)
        day_start = datetime(t.year, t.month, t.day, tzinfo=UTC).timestamp()
        days = calendar.monthrange(t.year, t.month)[1]
        month_end = datetime(t.year, t.month, 1, tzinfo=UTC).timestamp() + days * DAY_S
        return cls(
            day=t.strftime("%Y-%m-%d"),
            month=t.strftime("%Y-%m"),
            day_left_s=day_start + DAY_S - now,
            month_left_s=month_end - now,
        )


def _counters(owner: BudgetOwner, p: _Period) -> dict[str, tuple[str, float]]:
    """Budget field → (counter name, seconds until its period ends)."""
    scope = scope_of(owner)
    out = {
        "budget_usd_per_day": (f"budget:{scope}:usd:day:{p.day}", p.day_left_s),
        "budget_usd_per_month": (f"budget:{scope}:usd:month:{p.month}", p.month_left_s),
        "budget_tokens_per_day": (f"budget:{scope}:tokens:day:{p.day}", p.day_left_s),
    }
    if owner.user_hash is not None:
        name = f"budget:{scope}:user:{owner.user_hash}:usd:day:{p.day}"
        out["budget_usd_per_user_per_day"] = (name, p.day_left_s)
    return out


def _limits(b: Budgets) -> dict[str, tuple[float | None, str]]:
    return {
        "budget_usd_per_session": (b.usd_per_session, "usd"),
        "budget_tokens_per_session": (b.tokens_per_session, "tokens"),
        "budget_usd_per_user_per_day": (b.usd_per_user_per_day, "usd"),
        "budget_usd_per_day": (b.usd_per_day, "usd"),
        "budget_usd_per_month": (b.usd_per_month, "usd"),
        "budget_tokens_per_day": (b.tokens_per_day, "tokens"),
    }


async def _shared_lines(
    owner: BudgetOwner,
    budgets: Budgets,
    shared: SharedState,
    now: float,
    add: tuple[float, int] | None = None,
) -> list[_Line]:
    """The cross-session budgets with their totals; ``add`` (usd, tokens) is charged first."""
    lines = []
    limits = _limits(budgets)
    for budget, (counter, left_s) in _counters(owner, _Period.at(now)).items():
        limit, unit = limits[budget]
        if limit is None:
            continue
        if add is None:
            spent = await shared.get(counter)
        else:
            amount = add[0] if unit == "usd" else float(add[1])
            spent = await shared.add(counter, amount, left_s + _TTL_MARGIN_S)
        lines.append(_Line(budget, float(limit), spent, unit, left_s))
    return lines


def _describe(line: _Line) -> str:
    if line.unit == "usd":
        return f"${line.spent:.4f} of ${line.limit:g}"
    return f"{int(line.spent)} of {int(line.limit)} tokens"


def _exceeded(line: _Line) -> BudgetNotice:
    return BudgetNotice(
        line.budget,
        f"Budget {line.budget} is exhausted ({_describe(line)} used); the session ends. "
        "Raise the budget in the policy or wait until it resets.",
    )


@dataclass
class BudgetMeter:
    """One session's view of its budgets: counts the session's own spending and adds every
    charge to the shared counters."""

    owner: BudgetOwner
    budgets: Budgets
    shared: SharedState | None
    usd: float = 0.0
    tokens: int = 0
    _warned: set[str] = field(default_factory=set)

    @property
    def active(self) -> bool:
        return any(limit is not None for limit, _ in _limits(self.budgets).values())

    async def charge(self, usd: float, tokens: int, now: float) -> BudgetVerdict:
        """Count one response's (or transcription's) spending; what the client must hear."""
        self.usd += usd
        self.tokens += tokens
        return await self._verdict(now, (usd, tokens))

    async def check(self, now: float) -> BudgetVerdict:
        """Whether a new response may start (nothing is charged)."""
        return await self._verdict(now, None)

    async def _verdict(self, now: float, add: tuple[float, int] | None) -> BudgetVerdict:
        if not self.active:
            return OK
        lines = self._session_lines()
        if self.shared is not None and self.budgets.shared:
            lines += await _shared_lines(self.owner, self.budgets, self.shared, now, add)
        for line in lines:
            if line.spent >= line.limit:
                return BudgetVerdict(exceeded=_exceeded(line), rate_limits=_rate_limits(lines))
        warnings = []
        for line in lines:
            if line.spent >= WARN_AT * line.limit and line.budget not in self._warned:
                self._warned.add(line.budget)
                warnings.append(
                    BudgetNotice(
                        line.budget,
                        f"Budget {line.budget} is {line.spent / line.limit:.0%} used "
                        f"({_describe(line)}); the session ends when it is exhausted.",
                    )
                )
        return BudgetVerdict(tuple(warnings), None, _rate_limits(lines))

    def _session_lines(self) -> list[_Line]:
        b, lines = self.budgets, []
        if b.usd_per_session is not None:
            lines.append(_Line("budget_usd_per_session", b.usd_per_session, self.usd, "usd", None))
        if b.tokens_per_session is not None:
            lines.append(
                _Line(
                    "budget_tokens_per_session",
                    float(b.tokens_per_session),
                    float(self.tokens),
                    "tokens",
                    None,
                )
            )
        return lines


def _rate_limits(lines: list[_Line]) -> list[dict[str, Any]] | None:
    """The tightest token budget, as a ``rate_limits.updated`` entry."""
    tokens = [line for line in lines if line.unit == "tokens"]
    if not tokens:
        return None
    tight = min(tokens, key=lambda line: line.limit - line.spent)
    return [
        {
            "name": "tokens",
            "limit": int(tight.limit),
            "remaining": max(0, int(tight.limit - tight.spent)),
            "reset_seconds": round(tight.reset_s, 3) if tight.reset_s is not None else None,
        }
    ]


async def admission_refusal(
    principal: BudgetOwner, shared: SharedState, now: float
) -> tuple[str, str] | None:
    """``("budget_exceeded", message)`` when a cross-session budget of the principal's policy
    is already exhausted, so a new session would be cut off at once; None to admit."""
    budgets = Budgets.from_policy(principal.policy)
    if not budgets.shared:
        return None
    for line in await _shared_lines(principal, budgets, shared, now):
        if line.spent >= line.limit:
            return (
                "budget_exceeded",
                f"Budget {line.budget} is exhausted ({_describe(line)} used). Raise the "
                "budget in the policy or wait until it resets.",
            )
    return None
