"""When a relayed session's upstream fails, and when it must be renewed: the decisions,
free of I/O (`handover.py` acts on them; `relay.py` detects the failures).

Fallback (policy field ``fallback``): ``local`` continues on the embedded pipeline, ``next``
on the next upstream in the list (one that failed this session for good — an error that is
not ``retryable``, such as a refused key — is not tried again), ``none`` ends the session with
an ``upstream_unavailable`` error. With ``next`` and no usable upstream left, the session goes
on locally if the embedded engines run, else it ends as with ``none``.

Renewal (`RenewalSchedule`): an upstream session is renewed from half its
``max_session_seconds`` on (and at most five minutes before the cap), at the first quiet
moment. A renewal that fails retryably is tried again at the next quiet moment (at the latest
`RENEW_RETRY_S` later); one that fails for good is given up (when the upstream then ends the
session at its cap, a new session is opened there as in a failover).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..engines.errors import EngineError
from ..engines.upstream import (
    UpstreamClosed,
    UpstreamRefused,
    UpstreamStalled,
    UpstreamUnreachable,
)

Fallback = Literal["local", "next", "none"]
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
# The model a session reports once the embedded pipeline serves it after a failover.
LOCAL_MODEL = "voxgate-local"
# Renewal starts at most this long before the cap (and never before half of it).
RENEW_LEAD_S = 300.0
# A renewal that failed retryably is tried again this long after (or at an earlier event).
RENEW_RETRY_S = 5.0
# A quiet moment must last this long (no event, no client change) before a renewal starts.
RENEW_QUIET_S = 0.5


def failure_kind(error: EngineError) -> str:
    """How an upstream failed, for the audit and the metric: unreachable, refused, closed,
    stalled (or error, for anything else)."""
    if isinstance(error, UpstreamRefused):
        return "refused"
    if isinstance(error, UpstreamUnreachable):
        return "unreachable"
    if isinstance(error, UpstreamStalled):
        return "stalled"
    if isinstance(error, UpstreamClosed):
        return "closed"
    return "error"


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows a failure: go on ``local``ly, on ``next_upstream``, or end (``none``)."""

    fallback: Fallback
    next_upstream: str | None = None


@dataclass
class FailoverPlan:
    """One session's fallback policy and the upstreams it may use, in order."""

    fallback: Fallback
    upstreams: list[str]
    local_available: bool
    # Upstreams that failed this session for good: never tried again.
    refused_for_good: set[str] = field(default_factory=set)

    def decide(self, upstream: str, retryable: bool) -> Decision:
        if not retryable:
            self.refused_for_good.add(upstream)
        if self.fallback == "none":
            return Decision("none")
        if self.fallback == "next":
            after = self._after(upstream)
            if after is not None:
                return Decision("next", after)
        return Decision("local") if self.local_available else Decision("none")

    def _after(self, current: str) -> str | None:
        """The first usable upstream after ``current`` (wrapping around: one that failed
        only for a while may serve again later)."""
        if current not in self.upstreams:
            candidates = self.upstreams
        else:
            i = self.upstreams.index(current)
            candidates = self.upstreams[i + 1 :] + self.upstreams[:i]
        return next((u for u in candidates if u not in self.refused_for_good), None)


class RenewalSchedule:
    """When an upstream session should be renewed (see the module docstring)."""

    def __init__(self, max_session_s: float, opened_at: float) -> None:
        self.max_session_s = max_session_s
        self.opened_at = opened_at
        self.given_up = False

    @property
    def renew_from(self) -> float:
        cap = self.max_session_s
        return self.opened_at + max(cap / 2, cap - RENEW_LEAD_S)

    def due(self, now: float) -> bool:
        return not self.given_up and now >= self.renew_from

    def at_cap(self, now: float) -> bool:
        """Whether an upstream that ends the session now is most likely at its cap (the last
        tenth of it) rather than failing."""
        return now >= self.opened_at + 0.9 * self.max_session_s

    def failed(self, retryable: bool) -> None:
        if not retryable:
            self.given_up = True
