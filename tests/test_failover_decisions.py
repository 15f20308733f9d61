"""The failover and renewal decisions (session/failover.py), without sockets."""

from __future__ import annotations

import pytest

from voxgate.session.failover import (
    FailoverPlan,
    RenewalSchedule,
    StallWatch,
    UpstreamFailure,
)


def closed(upstream: str) -> UpstreamFailure:
    return UpstreamFailure("closed", "gone", upstream)


@pytest.mark.parametrize(
    ("status", "retryable"), [(401, False), (403, False), (429, True), (500, True), (503, True)]
)
def test_refusals_say_whether_trying_again_can_help(status: int, retryable: bool) -> None:
    failure = UpstreamFailure.refused("a", status)
    assert failure.retryable is retryable
    assert f"HTTP {status}" in failure.describe()


def test_local_fallback_goes_local() -> None:
    plan = FailoverPlan("local", ["a", "b"], local_available=True)
    assert plan.decide(closed("a")).fallback == "local"


def test_none_ends_the_session() -> None:
    plan = FailoverPlan("none", ["a", "b"], local_available=True)
    assert plan.decide(closed("a")).fallback == "none"


def test_next_takes_the_following_upstream_and_wraps_around() -> None:
    plan = FailoverPlan("next", ["a", "b", "c"], local_available=True)
    assert plan.decide(closed("a")).next_upstream == "b"
    assert plan.decide(closed("c")).next_upstream == "a"


def test_next_skips_upstreams_that_refused_for_good() -> None:
    plan = FailoverPlan("next", ["a", "b"], local_available=False)
    assert plan.decide(UpstreamFailure.refused("b", 401)).next_upstream == "a"
    # a fails too: b refused this session for good, so nothing is left.
    decision = plan.decide(closed("a"))
    assert decision.fallback == "none"


def test_next_without_another_upstream_goes_local_when_it_can() -> None:
    plan = FailoverPlan("next", ["a"], local_available=True)
    assert plan.decide(UpstreamFailure.refused("a", 401)).fallback == "local"


def test_stall_counts_only_while_a_response_is_expected() -> None:
    watch = StallWatch(timeout_s=2.0)
    assert watch.deadline() is None and not watch.stalled(100.0)
    watch.expect(10.0)
    assert watch.deadline() == 12.0
    watch.heard(11.0, "response.created", "resp_1")
    assert not watch.stalled(12.5)
    assert watch.stalled(13.0)
    watch.heard(13.1, "response.done", "resp_1")
    assert not watch.expecting and not watch.stalled(100.0)
    watch.heard(20.0, "input_audio_buffer.committed")  # turn detection will answer it
    assert watch.deadline() == 22.0


def test_renewal_from_half_the_cap_and_at_most_five_minutes_before_it() -> None:
    assert RenewalSchedule(20.0, opened_at=100.0).renew_from == 110.0
    assert RenewalSchedule(3600.0, opened_at=0.0).renew_from == 3300.0
    schedule = RenewalSchedule(20.0, opened_at=0.0)
    assert not schedule.due(9.9) and schedule.due(10.0)
    schedule.failed(UpstreamFailure("unreachable", "x", "a"))
    assert schedule.due(11.0)  # tried again at the next quiet moment
    schedule.failed(UpstreamFailure.refused("a", 403))
    assert not schedule.due(11.0)
