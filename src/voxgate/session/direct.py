"""Governance of a call whose media goes straight to an upstream Realtime service (direct
mode).

The client's browser talks to the upstream; voxgate holds a `Session` for the call all the
same (admitted, registered, counted, with its leases, its ledger and its duration limit) but
one with no client of its own (`NoClient`). `DirectCall` is that session's link to the
upstream call: voxgate's own sideband WebSocket on it, whose server events are read for
usage (`UpstreamUsage`) and booked through the session's observer, like the embedded
pipeline's. A budget used up ends the session; however the session ends (its duration
limit, a revoked key, a hang-up sent to voxgate, shutdown), `close` hangs the upstream call
up. If the upstream call ends first, the session ends with it.

A call voxgate cannot watch is not left running ungoverned: when the sideband cannot be
opened, the session ends and the call is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable

from websockets.exceptions import ConnectionClosed

from ..control.budgets import BudgetVerdict
from ..engines.upstream_calls import UpstreamEndpoint, UpstreamRefused, hang_up, open_sideband
from ..protocol.commands import ResponseFinished
from ..protocol.upstream_usage import UpstreamRecord, UpstreamUsage
from .session import Session
from .transport import TransportClosed

log = logging.getLogger(__name__)
HANGUP_TIMEOUT_S = 10.0


class NoClient:
    """The transport of a session whose client talks to someone else: nothing arrives
    until it is closed, and what is sent goes nowhere (sidebands still see every event)."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    async def receive(self) -> str | bytes:
        await self._closed.wait()
        raise TransportClosed("the session ended")

    async def send(self, text: str) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed.set()


class DirectCall:
    """The sideband watch over one upstream call, for the session that governs it."""

    def __init__(
        self,
        session: Session,
        endpoint: UpstreamEndpoint,
        call_id: str,
        safety_identifier: str | None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.call_id = call_id
        self._safety_identifier = safety_identifier
        self.usage = UpstreamUsage(session.connection.config.model)
        self._task: asyncio.Task[None] | None = None
        # The upstream call is over already: nothing to hang up.
        self.upstream_ended = False
        self.attached = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name=f"{self.call_id}:upstream-sideband"
        )

    async def close(self) -> None:
        """Stop watching and hang the upstream call up (unless it ended by itself)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.upstream_ended:
            return
        try:
            async with asyncio.timeout(HANGUP_TIMEOUT_S):
                await hang_up(self.endpoint, self.call_id)
            log.info("hung up upstream call %s (%s)", self.call_id, self.endpoint.name)
        except (UpstreamRefused, TimeoutError) as exc:
            log.error("hanging up upstream call %s failed: %s", self.call_id, exc)

    async def _watch(self) -> None:
        try:
            ws = await open_sideband(self.endpoint, self.call_id, self._safety_identifier)
        except UpstreamRefused as exc:
            self.session.end("upstream_unwatched", "upstream_sideband_failed", exc.message, 1011)
            return
        self.attached.set()
        try:
            async for raw in ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    await self._read(event)
            self.upstream_ended = True
            self.session.end("upstream_closed")
        except ConnectionClosed:
            self.upstream_ended = True
            self.session.end("upstream_closed")
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _read(self, event: dict[str, object]) -> None:
        observer = self.session.observer
        if observer is None:
            return
        if event.get("type") == "response.created":
            self._heed(await self._guarded(observer.before_response()))
        for record in self.usage.feed(event):
            self._heed(await self._book(record))

    async def _book(self, record: UpstreamRecord) -> BudgetVerdict:
        observer = self.session.observer
        assert observer is not None
        if isinstance(record, ResponseFinished):
            return await self._guarded(observer.response_finished(record))
        return await self._guarded(observer.user_input(record))

    async def _guarded(self, work: Awaitable[BudgetVerdict]) -> BudgetVerdict:
        try:
            return await work
        except Exception:  # the books are never worth ending a call over
            log.exception("booking usage of upstream call %s failed", self.call_id)
            return BudgetVerdict()

    def _heed(self, verdict: BudgetVerdict) -> None:
        if verdict.exceeded is not None:
            notice = verdict.exceeded
            self.session.end("budget_exceeded", "budget_exceeded", notice.message, code=1008)
