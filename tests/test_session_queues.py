"""The session's bounded queues: the outbox (control lane ahead of media, never ahead of the
same response's audio; purge; high-water) and the inbox (a full inbox pauses the reader)."""

from __future__ import annotations

import asyncio

from _helpers_protocol import eventually, settle, validated
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS
from voxgate.session.engines import EngineSet
from voxgate.session.inbox import Ended, Inbox
from voxgate.session.outbox import Outbox
from voxgate.session.session import SessionLimits
from voxgate.session.testing import running_session


async def drain(outbox: Outbox) -> list[str]:
    outbox.close()
    out = []
    while (text := await outbox.get()) is not None:
        out.append(text)
    return out


# -- outbox ---------------------------------------------------------------------------------


async def test_control_events_jump_ahead_of_queued_audio() -> None:
    outbox = Outbox()
    outbox.put_media("audio-1", "resp_a")
    outbox.put_media("audio-2", "resp_a")
    outbox.put_control("session.updated")
    outbox.put_control("response.created", "resp_b")
    assert await drain(outbox) == ["session.updated", "response.created", "audio-1", "audio-2"]


async def test_a_response_event_never_overtakes_that_responses_audio() -> None:
    outbox = Outbox()
    outbox.put_media("a-audio-1", "resp_a")
    outbox.put_control("a-transcript", "resp_a")
    outbox.put_media("a-audio-2", "resp_a")
    outbox.put_control("a-done", "resp_a")
    assert await drain(outbox) == ["a-audio-1", "a-transcript", "a-audio-2", "a-done"]


async def test_a_held_event_holds_the_events_behind_it_but_not_other_audio() -> None:
    outbox = Outbox()
    recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outbox.put_control("b-created", "resp_b")
    outbox.put_control("a-done", "resp_a", hold=recorded)
    outbox.put_control("c-created", "resp_c")
    outbox.put_media("b-audio", "resp_b")  # b's own events went out before the hold
    outbox.put_media("c-audio", "resp_c")  # c's response.created waits behind the hold
    sent = [await outbox.get(), await outbox.get()]
    assert sent == ["b-created", "b-audio"]
    getter = asyncio.create_task(outbox.get())
    await settle()
    assert not getter.done()  # neither a-done, c-created nor c's audio may go yet
    recorded.set_result(None)
    assert await getter == "a-done"
    assert await drain(outbox) == ["c-created", "c-audio"]


async def test_purge_drops_only_the_cancelled_responses_audio() -> None:
    outbox = Outbox()
    for i in range(3):
        outbox.put_media(f"a-{i}", "resp_a")
    outbox.put_media("b-0", "resp_b")
    assert outbox.purge("resp_a") == 3
    outbox.put_control("a-done", "resp_a")
    assert await drain(outbox) == ["a-done", "b-0"]


async def test_media_high_water_makes_producers_wait() -> None:
    outbox = Outbox(media_high_water=3)
    for i in range(3):
        await outbox.media_space()
        outbox.put_media(f"audio-{i}", "resp_a")
    waiter = asyncio.create_task(outbox.media_space())
    await settle()
    assert not waiter.done()
    assert await outbox.get() == "audio-0"
    await settle()
    assert waiter.done()


async def test_purge_and_close_release_a_waiting_producer() -> None:
    outbox = Outbox(media_high_water=1)
    outbox.put_media("audio", "resp_a")
    waiter = asyncio.create_task(outbox.media_space())
    await settle()
    assert not waiter.done()
    outbox.purge("resp_a")
    await settle()
    assert waiter.done()

    outbox.put_media("audio", "resp_b")
    waiter = asyncio.create_task(outbox.media_space())
    outbox.close()
    await settle()
    assert waiter.done()


async def test_the_session_writer_sends_control_events_before_backed_up_audio() -> None:
    async with running_session(EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())) as run:
        await run.transport.next_event()
        run.transport.hold()  # a stalled socket: audio backs up in the outbox
        run.session.outbox.put_media('{"audio": 1}', "resp_x")
        run.session.outbox.put_media('{"audio": 2}', "resp_x")
        await eventually(lambda: run.transport.stalled_sends == 1)  # stuck on audio 1
        run.transport.send_event({"type": "input_audio_buffer.clear"})
        await eventually(lambda: len(run.session.outbox) == 2)
        run.transport.resume()
        got = [await run.transport.next_event() for _ in range(3)]
        assert got == [{"audio": 1}, got[1], {"audio": 2}]
        assert got[1]["type"] == "input_audio_buffer.cleared"


# -- inbox ----------------------------------------------------------------------------------


async def test_a_full_inbox_pauses_the_producer_until_there_is_room() -> None:
    inbox: Inbox[int] = Inbox(capacity=2)
    await inbox.put(1)
    await inbox.put(2)
    third = asyncio.create_task(inbox.put(3))
    await settle()
    assert not third.done()
    assert await inbox.get() == 1
    await settle()
    assert third.done()
    assert [await inbox.get(), await inbox.get()] == [2, 3]


async def test_ending_wins_over_the_backlog_and_frees_blocked_producers() -> None:
    inbox: Inbox[int] = Inbox(capacity=1)
    await inbox.put(1)
    blocked = asyncio.create_task(inbox.put(2))
    await settle()
    inbox.end(Ended("expired", "session_expired"))
    inbox.end(Ended("later"))
    await settle()
    assert blocked.done()
    assert await inbox.get() == Ended("expired", "session_expired")


async def test_a_burst_larger_than_the_inbox_is_read_whole_and_in_order() -> None:
    limits = SessionLimits(idle_timeout_s=None, inbox_capacity=2)
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines, limits=limits, validate=validated) as run:
        await run.transport.next_event()
        for i in range(50):
            run.transport.send_event({"type": "response.cancel", "event_id": f"c{i}"})
        errors = [await run.transport.next_event() for _ in range(50)]
        assert [e["error"]["event_id"] for e in errors] == [f"c{i}" for i in range(50)]
