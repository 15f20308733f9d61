"""Clients that stop reading: the session's outgoing backlog is bounded in bytes, a client
past it is disconnected (close 1008, `client_too_slow`), and the idle timeout and maximum
duration end a session even when neither its events nor its close frame can be delivered."""

from __future__ import annotations

import asyncio
import gc
import weakref

from _helpers_protocol import StallingLLM, user_text, validated
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.backlog import Backlog
from voxgate.session.engines import EngineSet
from voxgate.session.session import SessionLimits
from voxgate.session.testing import MemoryTransport, running_session


class DeafTransport(MemoryTransport):
    """A client that stopped reading: sends and the close frame never complete."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_calls.append((code, reason))
        await asyncio.Event().wait()


def engines() -> EngineSet:
    return EngineSet(llm=StallingLLM(), tts=ScriptedTTS())


BIG = "x" * 100_000  # one retrieve of the item below answers ~100 KB


async def fill(transport: MemoryTransport, retrieves: int) -> None:
    transport.send_event({"type": "conversation.item.create", "item": user_text(BIG, "big")})
    for _ in range(retrieves):
        transport.send_event({"type": "conversation.item.retrieve", "item_id": "big"})


async def test_a_client_that_stops_reading_is_cut_off_at_the_byte_limit() -> None:
    limits = SessionLimits(idle_timeout_s=None, max_outbox_bytes=1_000_000)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        await run.transport.next_event()
        run.transport.hold()
        await fill(run.transport, 5)  # 500 KB queued: under the limit, the session waits
        await asyncio.sleep(0.05)
        assert not run.task.done()
        await fill(run.transport, 10)
        await asyncio.sleep(0.05)
        await run.clock.advance(5)  # the close timeout: the writer is still stuck
        ended = await run.ended()
        assert ended.reason == "slow_client"
        assert ended.close_code == 1008
        # The backlog was freed, not kept: only the error event saying why is left.
        assert run.session.outbox.queued_chars < 1000
        code, reason = run.transport.close_calls[0]
        assert code == 1008 and reason == "slow_client"


async def test_the_idle_timeout_ends_a_session_whose_client_reads_nothing() -> None:
    limits = SessionLimits(idle_timeout_s=30, close_timeout_s=5)
    deaf = DeafTransport(validate=validated)
    async with running_session(engines(), limits=limits, transport=deaf) as run:
        await run.transport.next_event()
        run.transport.hold()
        await fill(run.transport, 3)
        await asyncio.sleep(0.05)
        await run.clock.advance(30)  # idle: the session is asked to end...
        assert not run.task.done()  # ...and tries to flush and close for up to 5 s
        await run.clock.advance(5)
        ended = await run.ended()
    assert ended.reason == "idle"
    assert run.transport.close_calls  # the close was attempted, then abandoned


async def test_the_maximum_duration_ends_a_session_whose_client_reads_nothing() -> None:
    limits = SessionLimits(max_duration_s=60, idle_timeout_s=None, close_timeout_s=5)
    deaf = DeafTransport(validate=validated)
    async with running_session(engines(), limits=limits, transport=deaf) as run:
        await run.transport.next_event()
        run.transport.hold()
        await fill(run.transport, 3)
        await run.clock.advance(65)
        ended = await run.ended()
    assert ended.reason == "expired"


def test_a_sideband_backlog_is_bounded_in_bytes_and_events() -> None:
    backlog = Backlog(max_events=3, max_chars=10)
    backlog.put_nowait("12345")
    backlog.put_nowait("12345")
    try:
        backlog.put_nowait("1")
    except asyncio.QueueFull:
        pass
    else:
        raise AssertionError("an 11th character was accepted")
    backlog.put_nowait(None)  # the end marker always fits
    assert backlog.get_nowait() == "12345" and backlog.chars == 5


async def test_a_closed_session_is_freed_without_waiting_for_the_garbage_collector() -> None:
    gc.disable()  # only reference counting may free it
    try:
        async with running_session(engines(), validate=validated) as run:
            await run.transport.next_event()
            await fill(run.transport, 1)
            await run.transport.events_until("conversation.item.retrieved")
            freed = weakref.ref(run.connection)
        del run
        assert freed() is None, "a reference cycle keeps the closed session's conversation"
    finally:
        gc.enable()
