"""Budget arithmetic: shared per-day / per-month / per-user counters, their scopes and periods,
warnings once at 80 %, the tightest token budget in ``rate_limits.updated``, and the refusal
at admission once a cross-session budget is spent."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from openai.types.realtime import RateLimitsUpdatedEvent

from _ledger import Owner
from voxgate.control.budgets import BudgetMeter, Budgets, admission_refusal
from voxgate.control.shared import MemorySharedState

NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
NEXT_DAY = datetime(2026, 11, 29, 0, 30, tzinfo=UTC).timestamp()


def policy(**budgets: float) -> SimpleNamespace:
    return SimpleNamespace(**{f"budget_{k}": v for k, v in budgets.items()})


async def test_per_day_spending_is_shared_by_the_tenant_and_resets_next_day() -> None:
    shared = MemorySharedState()
    budgets = Budgets(usd_per_day=10)
    a = BudgetMeter(Owner(key_id="k1", tenant="acme"), budgets, shared)
    b = BudgetMeter(Owner(key_id="k2", tenant="acme"), budgets, shared)
    other = BudgetMeter(Owner(key_id="k3", tenant="globex"), budgets, shared)
    assert (await a.charge(6, 0, NOON)).exceeded is None
    assert (await other.charge(9, 0, NOON)).exceeded is None  # another tenant's money
    verdict = await b.charge(5, 0, NOON)
    assert verdict.exceeded is not None and verdict.exceeded.budget == "budget_usd_per_day"
    assert (await b.check(NEXT_DAY)).exceeded is None


async def test_per_user_budget_counts_one_user_only() -> None:
    shared = MemorySharedState()
    budgets = Budgets(usd_per_user_per_day=1)
    alice = BudgetMeter(Owner(user_hash="a" * 64), budgets, shared)
    bob = BudgetMeter(Owner(user_hash="b" * 64), budgets, shared)
    await alice.charge(1.5, 0, NOON)
    assert (await alice.check(NOON)).exceeded is not None
    assert (await bob.check(NOON)).exceeded is None


async def test_monthly_budget_spans_days() -> None:
    shared = MemorySharedState()
    meter = BudgetMeter(Owner(), Budgets(usd_per_month=3), shared)
    await meter.charge(2, 0, NOON)
    verdict = await meter.charge(2, 0, NEXT_DAY)
    assert verdict.exceeded is not None and verdict.exceeded.budget == "budget_usd_per_month"


async def test_warning_once_per_budget_at_80_percent() -> None:
    meter = BudgetMeter(Owner(), Budgets(usd_per_session=10), None)
    assert (await meter.charge(7.9, 0, NOON)).warnings == ()
    [warning] = (await meter.charge(0.1, 0, NOON)).warnings
    assert warning.budget == "budget_usd_per_session" and "80%" in warning.message
    assert (await meter.charge(1, 0, NOON)).warnings == ()


async def test_rate_limits_report_the_tightest_token_budget_per_the_sdk() -> None:
    shared = MemorySharedState()
    meter = BudgetMeter(Owner(), Budgets(tokens_per_session=1000, tokens_per_day=500), shared)
    verdict = await meter.charge(0, 100, NOON)
    assert verdict.rate_limits is not None
    event = RateLimitsUpdatedEvent.model_validate(
        {"type": "rate_limits.updated", "event_id": "event_1", "rate_limits": verdict.rate_limits}
    )
    [limit] = event.rate_limits
    assert (limit.name, limit.limit, limit.remaining) == ("tokens", 500, 400)
    assert limit.reset_seconds == 12 * 3600  # the day's counter resets at midnight UTC


async def test_no_budget_no_report() -> None:
    verdict = await BudgetMeter(Owner(), Budgets(), MemorySharedState()).charge(5, 5, NOON)
    assert verdict.rate_limits is None and verdict.exceeded is None and not verdict.warnings


async def test_admission_is_refused_once_a_shared_budget_is_spent() -> None:
    shared = MemorySharedState()
    owner = Owner(key_id="k1", policy=policy(tokens_per_day=100))
    assert await admission_refusal(owner, shared, NOON) is None
    await BudgetMeter(owner, Budgets(tokens_per_day=100), shared).charge(0, 100, NOON)
    refusal = await admission_refusal(owner, shared, NOON)
    assert refusal is not None
    code, message = refusal
    assert code == "budget_exceeded" and "budget_tokens_per_day" in message
    assert await admission_refusal(owner, shared, NEXT_DAY) is None
    # Per-session budgets never refuse a new session.
    fresh = Owner(policy=policy(usd_per_session=0.01, tokens_per_session=1))
    assert await admission_refusal(fresh, shared, NOON) is None
