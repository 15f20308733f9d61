"""The failover and renewal decisions (session/failover.py), without sockets."""

from __future__ import annotations

from voxgate.engines.upstream import (
    UpstreamClosed,
    UpstreamRefused,
    UpstreamStalled,
    UpstreamUnreachable,
)
from voxgate.session.failover import FailoverPlan, RenewalSchedule, failure_kind


def test_failures_are_named_for_the_audit() -> None:
    assert failure_kind(UpstreamRefused("no", 401)) == "refused"
    assert failure_kind(UpstreamUnreachable("no")) == "unreachable"
    assert failure_kind(UpstreamStalled("quiet")) == "stalled"
    assert failure_kind(UpstreamClosed("gone", None)) == "closed"


def test_local_fallback_goes_local() -> None:
    plan = FailoverPlan("local", ["a", "b"], local_available=True)
    assert plan.decide("a", retryable=True).fallback == "local"


def test_none_ends_the_session() -> None:
    plan = FailoverPlan("none", ["a", "b"], local_available=True)
    assert plan.decide("a", retryable=True).fallback == "none"


def test_next_takes_the_following_upstream_and_wraps_around() -> None:
    plan = FailoverPlan("next", ["a", "b", "c"], local_available=True)
    assert plan.decide("a", retryable=True).next_upstream == "b"
    assert plan.decide("c", retryable=True).next_upstream == "a"


def test_next_skips_upstreams_that_refused_for_good() -> None:
    plan = FailoverPlan("next", ["a", "b"], local_available=False)
    refused = UpstreamRefused("bad key", 401)
    assert plan.decide("b", refused.retryable).next_upstream == "a"
    # a fails too: b refused this session for good, so nothing is left.
    assert plan.decide("a", retryable=True).fallback == "none"


def test_next_without_another_upstream_goes_local_when_it_can() -> None:
    plan = FailoverPlan("next", ["a"], local_available=True)
    assert plan.decide("a", retryable=False).fallback == "local"


def test_renewal_from_half_the_cap_and_at_most_five_minutes_before_it() -> None:
    assert RenewalSchedule(20.0, opened_at=100.0).renew_from == 110.0
    assert RenewalSchedule(3600.0, opened_at=0.0).renew_from == 3300.0
    schedule = RenewalSchedule(20.0, opened_at=0.0)
    assert not schedule.due(9.9) and schedule.due(10.0)
    schedule.failed(retryable=True)
    assert schedule.due(11.0)  # tried again at the next quiet moment
    schedule.failed(retryable=False)
    assert not schedule.due(11.0)


def test_a_close_in_the_last_tenth_of_the_cap_is_the_cap() -> None:
    schedule = RenewalSchedule(100.0, opened_at=0.0)
    assert not schedule.at_cap(89.0)
    assert schedule.at_cap(90.0)
