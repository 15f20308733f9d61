"""When a relayed session's upstream fails, and when it must be renewed: the decisions,
free of I/O (the relay driver and `handover.py` act on them).

Failures (`UpstreamFailure.kind`):
- ``unreachable``: no connection (refused by the OS, DNS, timeout);
- ``refused``: the upstream answered the upgrade with an HTTP error (401/403/429/5xx);
- ``closed``: the upstream ended the session mid-way (a drop, a close frame, an error);
- ``stalled``: no event for ``stall_timeout_s`` while a response is expected (`StallWatch`).

Fallback (policy field ``fallback``): ``local`` continues on the embedded pipeline, ``next``
on the next upstream in the list (those that refused this session for good — a failure that
is not ``retryable``, such as a bad key — are not tried again), ``none`` ends the session with
an ``upstream_unavailable`` error. With ``next`` and no upstream left, the session goes on
locally if the embedded engines run, else it ends as with ``none``.

Renewal (`RenewalSchedule`): an upstream session is renewed from half its
``max_session_seconds`` on (at most five minutes before the cap), at the first quiet moment;
a renewal that fails retryably is tried again at the next quiet moment, one that fails for
good is given up (the session fails over when the upstream ends it at the cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FailureKind = Literal["unreachable", "refused", "closed", "stalled"]
Fallback = Literal["local", "next", "none"]
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
# The name a session's model takes when the embedded pipeline serves it after a failover.
LOCAL_MODEL = "voxgate-local"
# Renewal starts at most this long before the cap (and never before half of it).
RENEW_LEAD_S = 300.0


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    kind: FailureKind
    message: str
    upstream: str = ""
    status: int | None = None  # the HTTP status of a refusal
    retryable: bool = True

    @classmethod
    def refused(cls, upstream: str, status: int, message: str = "") -> UpstreamFailure:
        # 401/403 say the key or the account is wrong: trying again cannot help.
        retryable = status == 429 or status >= 500
        text = message or f"The upstream refused the session (HTTP {status})."
        return cls("refused", text, upstream, status, retryable)

    def describe(self) -> str:
        where = f"upstream '{self.upstream}'" if self.upstream else "the upstream"
        return {
            "unreachable": f"{where} could not be reached",
            "refused": f"{where} refused the session (HTTP {self.status})",
            "closed": f"{where} closed the session",
            "stalled": f"{where} stopped responding",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do about a failure: go on ``local``ly, on upstream ``next_upstream``, or end
    (``none``)."""

    fallback: Fallback
    next_upstream: str | None = None


@dataclass
class FailoverPlan:
    """One session's fallback policy and the upstreams it may still use, in order."""

    fallback: Fallback
    upstreams: list[str]
    local_available: bool
    # Upstreams that failed this session for good (not retryable): never tried again.
    refused_for_good: set[str] = field(default_factory=set)

    def decide(self, failure: UpstreamFailure) -> Decision:
        if not failure.retryable and failure.upstream:
            self.refused_for_good.add(failure.upstream)
        if self.fallback == "none":
            return Decision("none")
        if self.fallback == "next":
            after = self._after(failure.upstream)
            if after is not None:
                return Decision("next", after)
        return Decision("local") if self.local_available else Decision("none")

    def _after(self, current: str) -> str | None:
        """The first usable upstream after ``current`` in the list (wrapping around, so a
        failover can come back to an earlier upstream that failed only for a while)."""
        if current not in self.upstreams:
            candidates = self.upstreams
        else:
            i = self.upstreams.index(current)
            candidates = self.upstreams[i + 1 :] + self.upstreams[:i]
        return next((u for u in candidates if u not in self.refused_for_good), None)


class StallWatch:
    """Whether an upstream that owes the client a response has gone silent.

    A response is expected from a ``response.create`` sent upstream, or the upstream's
    ``input_audio_buffer.committed`` (turn detection answers it), until no response is open;
    while one is expected, every upstream event restarts the count."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._expected_since: float | None = None
        self._last_heard = 0.0
        self._open: set[str] = set()

    def expect(self, now: float) -> None:
        if self._expected_since is None:
            self._expected_since = now
            self._last_heard = now

    def heard(self, now: float, event_type: str, response_id: str | None = None) -> None:
        self._last_heard = now
        if event_type == "response.created" and response_id:
            self._open.add(response_id)
            self.expect(now)
        elif event_type == "response.done":
            self._open.discard(response_id or "")
            if not self._open:
                self._expected_since = None
        elif event_type == "input_audio_buffer.committed":
            self.expect(now)

    @property
    def expecting(self) -> bool:
        return self._expected_since is not None

    def deadline(self) -> float | None:
        """When the upstream counts as stalled unless it speaks first; None: not expecting."""
        return self._last_heard + self.timeout_s if self.expecting else None

    def stalled(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline


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

    def failed(self, failure: UpstreamFailure) -> None:
        if not failure.retryable:
            self.given_up = True
