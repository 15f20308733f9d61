"""Failover and renewal of a relayed session: one `Handover` per session makes its relay
drivers and moves the conversation from one engine to the next (see docs/relay.md).

- Failover: when the relay reports its upstream lost (`relay.UpstreamLost`), the session goes
  on, on the same client connection, as `failover.FailoverPlan` decides: on the embedded
  pipeline (the session's connection is seeded with the mirrored conversation and
  configuration, `protocol/carry.py`), on the next upstream (a new relay that replays the
  conversation before anything else), or not at all (the session ends with an
  ``upstream_unavailable`` error). User turns without a transcript (input transcription off)
  are carried as their audio: the pipeline transcribes them before it answers; a new
  upstream is given the audio. The relay has already closed the responses it cut off
  (``response.done``, status ``failed``); the user's turn they were answering is answered
  again by the fallback. The client then hears a ``session.updated`` whose ``model`` names
  the engine now serving it (`failover.LOCAL_MODEL` for the embedded pipeline). Client events
  the lost upstream never received go to the fallback.
- Renewal: from `failover.RenewalSchedule`'s time on, at the first quiet moment (no response
  in progress or asked for, the user not speaking), a new upstream session is opened and given
  the conversation while the old one still serves (make before break); if the conversation
  did not move meanwhile and it is still quiet, the relay switches to it silently, else the
  new session is dropped and the next quiet moment tries again. An upstream that ends the
  session at its cap before a quiet moment came is reopened the same way, announced by a
  ``session.updated``.

Every failover and renewal goes to ``report`` (the server's audit log and metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from ..engines.upstream import Upstream, UpstreamClosed, UpstreamError, UpstreamProtocol
from ..protocol import events as ev
from ..protocol.carry import ConversationMirror, replay_events, seed_connection
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from .driver import DriverHost, DriverOutput
from .engines import EngineSet
from .failover import (
    LOCAL_MODEL,
    RENEW_QUIET_S,
    RENEW_RETRY_S,
    UPSTREAM_UNAVAILABLE,
    Decision,
    FailoverPlan,
    Fallback,
    RenewalSchedule,
    failure_kind,
)
from .pipeline import PipelineDriver
from .relay import RelayDriver
from .relay_playout import AudioDropped
from .relay_tools import ToolRelayDriver
from .relay_types import UpstreamHook, UpstreamLost
from .tool_flow import SessionTools

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HandoverRecord:
    """One failover or renewal, for the audit log and the metrics."""

    kind: Literal["failover", "renewal"]
    upstream: str  # what failed or was renewed
    to: str  # what serves now: "pipeline", "relay:<name>", or "none" (the session ended)
    reason: str  # unreachable, refused, closed, stalled, error; or "cap" for a renewal
    retryable: bool = True
    phase: str = "session"
    message: str = ""


Report = Callable[[HandoverRecord], None]


class Handover:
    def __init__(
        self,
        upstreams: Sequence[Upstream],
        protocol: UpstreamProtocol,
        *,
        model: str,
        fallback: Fallback,
        engines: EngineSet | None,
        safety_identifier: str | None = None,
        report: Report | None = None,
        hook: UpstreamHook | None = None,
        tools: SessionTools | None = None,
        audio_dropped: AudioDropped | None = None,
    ) -> None:
        self.upstreams = {u.name: u for u in upstreams}
        self.audio_dropped = audio_dropped  # given to every relay
        self.protocol = protocol
        self.model = model
        self.engines = engines
        self.safety_identifier = safety_identifier
        self.report = report or (lambda record: None)
        self.hook = hook  # given to every relay
        # Server tools: every relay runs them here (ToolRelayDriver), as does the pipeline.
        self.tools = tools
        self.plan = FailoverPlan(
            fallback, list(self.upstreams), local_available=engines is not None
        )
        self.mirror = ConversationMirror()
        self.current: RelayDriver | None = None
        self._schedule: RenewalSchedule | None = None
        self._opened_at: float | None = None
        self._renewing: RelayDriver | None = None
        # Renewal waits for a quiet moment to last RENEW_QUIET_S: the mark being waited on,
        # and the last one that lasted.
        self._settling: tuple[int, int] | None = None
        self._settled: tuple[int, int] | None = None
        # The session id the client was told first (the first upstream's).
        self._client_session_id: str | None = None

    def relay(
        self,
        upstream: Upstream,
        *,
        initial: dict[str, object] | None = None,
        replay: Sequence[dict[str, object]] = (),
        announce: Literal["created", "updated", "none"] = "created",
    ) -> RelayDriver:
        """A relay driver to ``upstream`` whose failures and quiet moments come here."""
        kind = partial(ToolRelayDriver, tools=self.tools) if self.tools else RelayDriver
        return kind(
            upstream,
            self.protocol,
            model=self.model,
            safety_identifier=self.safety_identifier,
            initial=dict(initial) if initial else None,
            on_lost=self._lost,
            hook=self.hook,
            mirror=self.mirror,
            replay=[dict(e) for e in replay],
            announce=announce,
            after_event=self._after_event,
            audio_dropped=self.audio_dropped,
        )

    def first(self, upstream: Upstream, initial: dict[str, object] | None) -> RelayDriver:
        """The session's first driver."""
        self.current = self.relay(upstream, initial=initial)
        return self.current

    # -- failover -------------------------------------------------------------------------

    def _lost(self, conn: RealtimeConnection, lost: UpstreamLost) -> list[DriverOutput]:
        failed = self.current
        if failed is None or failed.host is None:
            return []
        host, name = failed.host, failed.upstream.name
        self._renewing = None  # a renewal under way ends with the failed driver's tasks
        unsent = failed.take_unsent()
        self.mirror.cut(lost.cut)
        decision = self._decide(name, lost)
        record = HandoverRecord(
            "failover",
            name,
            "none",
            failure_kind(lost.error),
            lost.error.retryable,
            lost.phase,
            lost.error.message,
        )
        if decision.fallback == "none":
            self.report(record)
            message = (
                f"The session's upstream Realtime service failed ({lost.error.message}) and "
                "this session has no fallback. "
                + ("Try again shortly." if lost.error.retryable else "Ask the server's operator.")
            )
            host.end("upstream_lost", UPSTREAM_UNAVAILABLE, message, 1011)
            return []
        if decision.fallback == "local":
            out = self._to_local(conn, host, lost, unsent)
            self.report(_to(record, "pipeline"))
            return out
        assert decision.next_upstream is not None
        out = self._to_next(conn, host, self.upstreams[decision.next_upstream], lost, unsent)
        self.report(_to(record, f"relay:{decision.next_upstream}"))
        return out

    def _decide(self, upstream: str, lost: UpstreamLost) -> Decision:
        now = self._now()
        at_cap = (
            isinstance(lost.error, UpstreamClosed)
            and self._schedule is not None
            and now is not None
            and self._schedule.at_cap(now)
        )
        if at_cap:  # the upstream's session cap, not a fault: open a new session there
            return Decision("next", upstream)
        return self.plan.decide(upstream, lost.error.retryable)

    def _to_local(
        self, conn: RealtimeConnection, host: DriverHost, lost: UpstreamLost, unsent: list[str]
    ) -> list[DriverOutput]:
        assert self.engines is not None
        out: list[DriverOutput] = []
        if lost.phase == "session":
            # User turns the upstream never transcribed are transcribed here, while the
            # pipeline starts; a response waits for their words (listener.ready).
            dropped, owed = seed_connection(conn, self.mirror, model=LOCAL_MODEL)
            out += owed
            if dropped:
                log.warning(
                    "session %s: settings not carried to the pipeline: %s", conn.session_id, dropped
                )
        else:
            conn.config = conn.config.model_copy(update={"model": LOCAL_MODEL})
        self.current = None
        pipeline = PipelineDriver(self.engines, tools=self.tools)
        host.switch(pipeline, f"failover: {lost.error.message}")
        if lost.phase == "connect":
            out += conn.start()
        session_id = self._client_session_id or conn.session_id
        wire = conn.config.to_wire(session_id=session_id, expires_at=conn.expires_at)
        out.append(ev.SessionUpdated(session=wire))
        for text in unsent:
            out += conn.receive(text)
        if _owed(lost, unsent) and conn.active_response_id is None:
            try:  # answer the turn the lost upstream was answering (or asked to)
                out += conn.create_response(None)
            except ProtocolError as exc:
                out.append(conn.error(exc))
        return out

    def _to_next(
        self,
        conn: RealtimeConnection,
        host: DriverHost,
        upstream: Upstream,
        lost: UpstreamLost,
        unsent: list[str],
    ) -> list[DriverOutput]:
        if lost.phase == "session":
            events = replay_events(self.mirror)
            relay = self.relay(
                upstream, initial=events[0]["session"], replay=events[1:], announce="updated"
            )
        else:
            previous = self.current.initial if self.current is not None else None
            relay = self.relay(upstream, initial=previous)
        self.current = relay
        self._schedule = None
        self._opened_at = self._now()
        host.switch(relay, f"failover: {lost.error.message}")
        for text in unsent:
            relay.receive(conn, text)
        if _owed(lost, unsent):
            relay.send_upstream(conn, {"type": "response.create"})
        return []

    # -- renewal --------------------------------------------------------------------------

    def _after_event(self, driver: RelayDriver, conn: RealtimeConnection) -> list[DriverOutput]:
        if driver is not self.current or driver.host is None:
            return []
        host = driver.host
        if self._client_session_id is None:
            self._client_session_id = self.mirror.session_id
        now = host.clock.monotonic()
        if self._schedule is None:
            opened = self._opened_at if self._opened_at is not None else now
            self._schedule = RenewalSchedule(driver.upstream.max_session_seconds, opened)
            driver.spawn(self._wake(driver, host, self._schedule.renew_from), "renewal-timer")
        if self._schedule.due(now) and self._renewing is None and self._quiet(driver):
            mark = self._mark(driver)
            if self._settled == mark:
                self._renew(driver, host)
            elif self._settling != mark:
                # A quiet moment is one that lasts: a burst of events (an item's added and
                # done) must not start a renewal its next event makes stale.
                self._settling = mark
                driver.spawn(self._settle(driver, host, mark), "renewal-settle")
        return []

    def _mark(self, driver: RelayDriver) -> tuple[int, int]:
        """Moves whenever the conversation may have changed (see `_renewed`)."""
        return self.mirror.version, driver.changes_sent

    async def _settle(self, driver: RelayDriver, host: DriverHost, mark: tuple[int, int]) -> None:
        await host.clock.sleep(RENEW_QUIET_S)

        def check(conn: RealtimeConnection) -> list[DriverOutput]:
            self._settling = None
            if self._mark(driver) == mark:
                self._settled = mark
            return self._after_event(driver, conn)

        await host.post(check)

    def _quiet(self, driver: RelayDriver) -> bool:
        """No response running or asked for, the user not speaking, and the upstream has
        answered the client's last change (so the conversation mirrored is the whole of it)."""
        answered = driver.changes_heard == driver.changes_sent
        return answered and not driver.busy and not self.mirror.speaking

    async def _wake(self, driver: RelayDriver, host: DriverHost, at: float) -> None:
        # A loop's timer may fire a hair before the clock reads ``at``: sleep until it does.
        while (left := at - host.clock.monotonic()) > 0:
            await host.clock.sleep(left)
        await host.post(lambda conn: self._after_event(driver, conn))

    def _renew(self, old: RelayDriver, host: DriverHost) -> None:
        events = replay_events(self.mirror)
        new = self.relay(
            old.upstream, initial=events[0]["session"], replay=events[1:], announce="none"
        )
        self._renewing = new
        version, started = self._mark(old), host.clock.monotonic()

        async def prepare() -> None:
            try:
                await new.prepare(host.clock)
            except UpstreamError as exc:
                failed = exc
                await host.post(lambda conn: self._renewal_failed(old, failed))
                return
            except asyncio.CancelledError:
                await new.discard()
                raise
            await host.post(lambda conn: self._renewed(conn, old, new, version, started))

        old.spawn(prepare(), "renewal")

    def _renewal_failed(self, old: RelayDriver, exc: UpstreamError) -> list[DriverOutput]:
        self._renewing = None
        log.warning("renewing upstream %s failed: %s", old.upstream.name, exc.message)
        if self._schedule is not None:
            self._schedule.failed(exc.retryable)
        if exc.retryable and old is self.current and old.host is not None:
            host = old.host  # a quiet session may hear nothing for long: try again later
            old.spawn(self._wake(old, host, host.clock.monotonic() + RENEW_RETRY_S), "renewal")
        return []

    def _renewed(
        self,
        conn: RealtimeConnection,
        old: RelayDriver,
        new: RelayDriver,
        version: tuple[int, int],
        started: float,
    ) -> list[DriverOutput]:
        self._renewing = None
        host = old.host
        moved = self._mark(old) != version
        if old is not self.current or host is None or moved or not self._quiet(old):
            _close_later(new)  # the conversation moved on: the next quiet moment tries again
            return self._after_event(old, conn)
        unsent = old.take_unsent()
        self.current, self._schedule, self._opened_at = new, None, started
        host.switch(new, "renewal")
        for text in unsent:
            new.receive(conn, text)
        name = old.upstream.name
        self.report(HandoverRecord("renewal", name, f"relay:{name}", "cap"))
        return []

    def _now(self) -> float | None:
        driver = self.current
        host = driver.host if driver is not None else None
        return host.clock.monotonic() if host is not None else None


def _owed(lost: UpstreamLost, unsent: list[str]) -> bool:
    """Whether the client is owed a response the lost upstream took on: one it cut off, or
    one asked for that it never started (those still unsent go to the fallback as they are)."""
    unsent_asks = sum(_type_of(text) == "response.create" for text in unsent)
    return bool(lost.cut) or lost.asked > unsent_asks


def _type_of(text: str) -> object:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event.get("type") if isinstance(event, dict) else None


def _to(record: HandoverRecord, to: str) -> HandoverRecord:
    return HandoverRecord(
        record.kind,
        record.upstream,
        to,
        record.reason,
        record.retryable,
        record.phase,
        record.message,
    )


_closing: set[asyncio.Task[None]] = set()


def _close_later(driver: RelayDriver) -> None:
    """Close a prepared upstream session nobody will use (from the main loop)."""
    task = asyncio.get_running_loop().create_task(driver.discard(), name="discard-upstream")
    _closing.add(task)
    task.add_done_callback(_closing.discard)
