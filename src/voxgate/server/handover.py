"""A relayed session's failover and renewal, wired to the server: which upstreams may take
over, the policy's ``fallback``, and where each failover and renewal is recorded (the audit
log: ``upstream_failover`` / ``upstream_renewal``; the metrics:
``voxgate_upstream_failovers_total`` / ``voxgate_upstream_renewals_total``)."""

from __future__ import annotations

import logging
from typing import Any

from ..control.identity import Principal
from ..engines.upstream import Upstream
from ..protocol.connection import RealtimeConnection
from ..session.handover import Handover, HandoverRecord
from ..session.relay import RelayDriver
from ..session.tool_flow import SessionTools
from .state import AppState

log = logging.getLogger(__name__)


def relay_driver(
    state: AppState,
    principal: Principal,
    connection: RealtimeConnection,
    upstream: Upstream,
    initial: dict[str, Any] | None,
    safety_identifier: str | None,
    tools: SessionTools | None = None,
) -> RelayDriver:
    """The first driver of a session relayed to ``upstream``, with its failover plan: the
    other upstreams serving the same model, in the configured order, and the policy's
    fallback ("local" unless the policy says otherwise: the embedded engines always run)."""
    model = connection.config.model
    candidates = [u for u in state.upstreams if u.serves(model)]
    session_id = connection.session_id

    def report(record: HandoverRecord) -> None:
        if record.kind == "failover":
            log.warning(
                "session %s: upstream %s %s; now served by %s",
                session_id,
                record.upstream,
                record.reason,
                record.to,
            )
            state.metrics.failovers.labels(record.upstream, record.reason, record.to).inc()
        else:
            state.metrics.renewals.labels(record.upstream).inc()
        state.controls.audit(
            f"upstream_{record.kind}",
            principal,
            code=record.reason,
            session_id=session_id,
            upstream=record.upstream,
            to=record.to,
            retryable=record.retryable,
            phase=record.phase,
            message=record.message,
        )

    handover = Handover(
        candidates,
        state.upstream_protocol,
        model=model,
        fallback=principal.policy.fallback or "local",
        engines=state.engines,
        safety_identifier=safety_identifier,
        report=report,
        tools=tools,
        audio_dropped=lambda name, seconds: state.metrics.relay_audio_dropped.labels(name).inc(
            seconds
        ),
    )
    return handover.first(upstream, initial)
