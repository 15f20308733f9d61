"""Renewal and failover decisions of `Handover` in a session on virtual time, against
upstreams that speak the Realtime wire protocol from a script (the `UpstreamProtocol` seam,
in memory): when a renewal happens, what the new upstream session is given, and that a
conversation that moves on meanwhile is never lost to a switch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from test_relay_driver import SESSION, ScriptedUpstream, engines, event
from voxgate.engines.upstream import Upstream
from voxgate.session.clock import VirtualClock
from voxgate.session.handover import Handover, HandoverRecord
from voxgate.session.testing import running_session

CAP_S = 100.0


class AnsweringUpstream(ScriptedUpstream):
    """Answers the relay's ``session.update`` and ``conversation.item.create`` as an upstream
    would; ``gate`` (when set) holds the answer to the configuration back."""

    def __init__(
        self, name: str, gate: asyncio.Event | None = None, answer_items: bool = True
    ) -> None:
        super().__init__()
        self.name = name
        self.gate = gate
        self.answer_items = answer_items

    async def send(self, text: str) -> None:
        await super().send(text)
        sent = json.loads(text)
        if sent["type"] == "session.update":
            if self.gate is not None:
                await self.gate.wait()
            session = {**SESSION, **sent["session"], "id": f"sess_{self.name}"}
            self.emit(event("session.updated", f"event_{self.name}_u", session=session))
        elif sent["type"] == "conversation.item.create" and self.answer_items:
            item = {**sent["item"], "object": "realtime.item", "status": "completed"}
            self.emit(event("conversation.item.added", f"event_{self.name}_a", item=item))
            self.emit(event("conversation.item.done", f"event_{self.name}_d", item=item))


class Upstreams:
    """The protocol: each connection is the next scripted upstream."""

    def __init__(self, *ends: AnsweringUpstream) -> None:
        self.ends = list(ends)
        self.opened: list[AnsweringUpstream] = []

    async def connect(
        self, upstream: Upstream, model: str, *, safety_identifier: str | None = None
    ) -> AnsweringUpstream:
        end = self.ends.pop(0)
        self.opened.append(end)
        return await end.connect(upstream, model)


def handover(protocol: Upstreams, records: list[HandoverRecord]) -> Handover:
    # The stall is timed on the session's (virtual) clock: these tests let minutes pass
    # within a response, which must not count as a stall here.
    upstream = Upstream(
        name="up",
        url="ws://up.invalid/v1/realtime",
        max_session_seconds=CAP_S,
        stall_timeout_s=10 * CAP_S,
    )
    return Handover(
        [upstream],
        protocol,  # type: ignore[arg-type]  # the scripted ends speak the connection's part
        model="gpt-realtime",
        fallback="local",
        engines=engines(),
        report=records.append,
    )


def user_item(text: str, item_id: str) -> dict[str, Any]:
    content = [{"type": "input_text", "text": text}]
    return {"type": "message", "role": "user", "id": item_id, "content": content}


async def said(up: AnsweringUpstream, text: str, item_id: str) -> None:
    """The upstream tells of a user item (as it does after a client's item.create)."""
    item = {**user_item(text, item_id), "object": "realtime.item", "status": "completed"}
    up.emit(event("conversation.item.added", f"event_{item_id}_a", item=item))
    up.emit(event("conversation.item.done", f"event_{item_id}_d", item=item))


async def advance_until(clock: VirtualClock, done: Callable[[], object]) -> None:
    """Move virtual time on in small steps until ``done()`` (a renewal waits for a quiet
    moment to last, on the session's clock)."""
    for _ in range(1000):
        if done():
            return
        await clock.advance(0.1)
    raise AssertionError("nothing happened within 100 s of virtual time")


async def sent_items(up: AnsweringUpstream) -> list[str]:
    return [
        json.loads(t)["item"]["id"]
        for t in up.sent
        if json.loads(t)["type"] == "conversation.item.create"
    ]


async def test_renewal_at_a_quiet_moment_replays_and_switches_silently() -> None:
    first, second = AnsweringUpstream("one"), AnsweringUpstream("two")
    protocol, records = Upstreams(first, second), list[HandoverRecord]()
    h = handover(protocol, records)
    async with running_session(engines(), driver=h.first(h.upstreams["up"], None)) as run:
        assert (await run.transport.next_event())["type"] == "session.created"
        await said(first, "My name is Ada.", "item_ada")
        await run.transport.events_until("conversation.item.done")
        await run.clock.advance(CAP_S / 2 - 1)
        assert protocol.opened == [first]  # not before half the cap
        await advance_until(run.clock, lambda: second.sent)
        assert run.clock.monotonic() >= CAP_S / 2
        update = await second.next_sent()
        assert update["type"] == "session.update"
        assert update["session"]["instructions"] == SESSION["instructions"]
        replayed = await second.next_sent()
        assert replayed["item"] == user_item("My name is Ada.", "item_ada")
        await asyncio.wait_for(first.closed.wait(), 5)
        # From now on the client's events go to the new upstream session.
        run.transport.send_event({"type": "input_audio_buffer.clear", "event_id": "evt_after"})
        assert (await second.next_sent())["event_id"] == "evt_after"
        second.emit(event("input_audio_buffer.cleared", "event_two_c"))
        assert (await run.transport.next_event())["event_id"] == "event_two_c"
    kinds = [json.loads(t)["type"] for t in run.transport.sent]
    assert kinds == ["session.created", "conversation.item.added", "conversation.item.done"] + [
        "input_audio_buffer.cleared"
    ]
    assert [(r.kind, r.to) for r in records] == [("renewal", "relay:up")]


async def test_a_conversation_that_moves_on_during_renewal_is_renewed_again() -> None:
    gate = asyncio.Event()
    first, stale, fresh = (
        AnsweringUpstream("one"),
        AnsweringUpstream("stale", gate),
        AnsweringUpstream("fresh"),
    )
    protocol, records = Upstreams(first, stale, fresh), list[HandoverRecord]()
    h = handover(protocol, records)
    async with running_session(engines(), driver=h.first(h.upstreams["up"], None)) as run:
        await run.transport.next_event()
        await said(first, "My name is Ada.", "item_ada")
        await run.transport.events_until("conversation.item.done")
        await advance_until(run.clock, lambda: stale.sent)
        assert (await stale.next_sent())["type"] == "session.update"
        # While the new session is being prepared, the old one hears more.
        await said(first, "I live in Paris.", "item_paris")
        await run.transport.events_until("conversation.item.done")
        gate.set()
        await asyncio.wait_for(stale.closed.wait(), 5)  # dropped, not switched to
        # The next quiet moment prepares another, with everything in it.
        await advance_until(run.clock, lambda: fresh.sent)
        assert (await fresh.next_sent())["type"] == "session.update"
        await asyncio.wait_for(first.closed.wait(), 5)
        assert await sent_items(fresh) == ["item_ada", "item_paris"]
    assert await sent_items(stale) == ["item_ada"]
    assert [r.kind for r in records] == ["renewal"]


async def test_no_renewal_while_a_response_runs() -> None:
    first, second = AnsweringUpstream("one"), AnsweringUpstream("two")
    protocol, records = Upstreams(first, second), list[HandoverRecord]()
    h = handover(protocol, records)
    async with running_session(engines(), driver=h.first(h.upstreams["up"], None)) as run:
        await run.transport.next_event()
        run.transport.send_event({"type": "response.create"})
        await first.next_sent()
        response = {"id": "resp_1", "object": "realtime.response", "conversation_id": "conv"}
        first.emit(event("response.created", "event_r1", response=response))
        await run.transport.events_until("response.created")
        await run.clock.advance(CAP_S / 2 + 1)
        assert protocol.opened == [first]
        first.emit(event("response.done", "event_r2", response={**response, "status": "completed"}))
        await run.transport.events_until("response.done")
        # Quiet again: now it renews.
        await advance_until(run.clock, lambda: second.sent)
        assert (await second.next_sent())["type"] == "session.update"
        await asyncio.wait_for(first.closed.wait(), 5)
    assert [r.kind for r in records] == ["renewal"]


async def test_an_upstream_that_closes_at_its_cap_is_reopened_with_the_conversation() -> None:
    first, second = AnsweringUpstream("one"), AnsweringUpstream("two")
    protocol, records = Upstreams(first, second), list[HandoverRecord]()
    h = handover(protocol, records)
    async with running_session(engines(), driver=h.first(h.upstreams["up"], None)) as run:
        await run.transport.next_event()
        await said(first, "My name is Ada.", "item_ada")
        run.transport.send_event({"type": "response.create"})
        await first.next_sent()
        response = {"id": "resp_1", "object": "realtime.response", "conversation_id": "conv"}
        first.emit(event("response.created", "event_r1", response=response))
        await run.transport.events_until("response.created")
        await run.clock.advance(CAP_S)  # never quiet: no renewal came before the cap
        first.emit(None)  # the upstream ends the session
        cut = await run.transport.events_until("response.done")
        assert cut[-1]["response"]["status"] == "failed"
        updated = await run.transport.next_event()
        assert (updated["type"], updated["session"]["id"]) == ("session.updated", "sess_two")
        assert (await second.next_sent())["type"] == "session.update"
        assert (await second.next_sent())["item"]["id"] == "item_ada"
        # The turn the closed session was answering is asked for again.
        assert (await second.next_sent())["type"] == "response.create"
    assert [(r.kind, r.reason, r.to) for r in records] == [("failover", "closed", "relay:up")]


async def test_a_client_change_during_renewal_is_never_lost_to_the_switch() -> None:
    gate = asyncio.Event()
    first, stale, fresh = (
        AnsweringUpstream("one", answer_items=False),  # answers when the test says so
        AnsweringUpstream("stale", gate),
        AnsweringUpstream("fresh"),
    )
    protocol, records = Upstreams(first, stale, fresh), list[HandoverRecord]()
    h = handover(protocol, records)
    async with running_session(engines(), driver=h.first(h.upstreams["up"], None)) as run:
        await run.transport.next_event()
        await advance_until(run.clock, lambda: stale.sent)
        assert (await stale.next_sent())["type"] == "session.update"
        # The client adds an item while the new session is prepared; the old upstream has
        # not answered it yet when the preparation is done.
        item = user_item("Remember the milk.", "item_milk")
        run.transport.send_event({"type": "conversation.item.create", "item": item})
        assert (await first.next_sent())["item"]["id"] == "item_milk"
        gate.set()
        await asyncio.wait_for(stale.closed.wait(), 5)  # dropped: it missed the item
        assert protocol.opened == [first, stale]  # no new try before the upstream answers
        await said(first, "Remember the milk.", "item_milk")
        await advance_until(run.clock, lambda: first.closed.is_set())
        assert await sent_items(fresh) == ["item_milk"]
    assert [r.kind for r in records] == ["renewal"]
