"""Ending a session: the peer hanging up (also mid-response), asking it to end twice, and
nothing left running afterwards."""

from __future__ import annotations

import asyncio

from _helpers_protocol import StallingLLM, StallingTTS, eventually, settle, user_text, validated
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.session.engines import EngineSet
from voxgate.session.testing import running_session


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_peer_closing_mid_response_ends_the_session_cleanly() -> None:
    llm, tts = StallingLLM(first="Hello there. And"), StallingTTS()
    async with running_session(EngineSet(llm=llm, tts=tts), validate=validated) as run:
        run.transport.send_event({"type": "conversation.item.create", "item": user_text("Hi")})
        run.transport.send_event({"type": "response.create"})
        await run.transport.events_until("response.output_audio.delta")
        run.transport.close_from_peer()
        ended = await run.ended()
    assert ended.reason == "client_closed"
    assert llm.closed.is_set() and tts.closed.is_set()
    assert not other_tasks()
    assert run.transport.close_calls == [(1000, "client_closed")]


async def test_peer_closing_while_idle_ends_the_session() -> None:
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines) as run:
        await run.transport.next_event()
        run.transport.close_from_peer()
        assert (await run.ended()).reason == "client_closed"
    assert not other_tasks()


async def test_end_is_idempotent_and_the_first_reason_wins() -> None:
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        run.session.end("server_shutdown", "server_shutting_down", "Restarting.", code=1012)
        run.session.end("other", "other_code", "Other.")
        ended = await run.ended()
        run.session.end("after the end")  # harmless
    assert (ended.reason, ended.close_code) == ("server_shutdown", 1012)
    errors = await run.transport.rest()
    assert [e["error"]["code"] for e in errors] == ["server_shutting_down"]
    assert run.transport.close_calls == [(1012, "server_shutdown")]
    assert run.session.ended == ended


async def test_ending_mid_response_sends_its_done_before_closing() -> None:
    llm = StallingLLM()
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS()), validate=validated) as run:
        run.transport.send_event(
            {"type": "response.create", "response": {"output_modalities": ["text"]}}
        )
        await run.transport.events_until("response.output_text.delta")
        run.session.end("server_shutdown")
        await run.ended()
    rest = await run.transport.rest()
    assert [e["type"] for e in rest][-1] == "response.done"
    assert rest[-1]["response"]["status"] == "cancelled"
    assert llm.closed.is_set()
    assert not other_tasks()


async def test_client_events_after_the_end_are_ignored() -> None:
    llm = ScriptedLLM([text_script("never")])
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS())) as run:
        await run.transport.next_event()
        run.session.end("server_shutdown")
        run.transport.send_event({"type": "response.create"})
        await run.ended()
    await settle()
    assert llm.requests == []
    assert [e["type"] for e in await run.transport.rest()] == []


async def test_a_socket_that_stops_draining_cannot_hold_the_close_forever() -> None:
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines) as run:
        await run.transport.next_event()
        run.transport.hold()
        run.transport.send_event({"type": "input_audio_buffer.clear"})
        await eventually(lambda: run.transport.stalled_sends == 1)  # the writer is stuck
        run.session.end("server_shutdown")
        await settle()
        assert not run.task.done()  # waiting for the writer, within close_timeout_s
        await run.clock.advance(run.session.limits.close_timeout_s)
        assert (await run.ended()).reason == "server_shutdown"
    assert run.transport.close_calls == [(1000, "server_shutdown")]
    assert not other_tasks()
