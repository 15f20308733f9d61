"""response.cancel through a running Session: the engines stop, the client gets exactly one
response.done, and queued audio of the cancelled response is never sent."""

from __future__ import annotations

import asyncio
from typing import Any

from _helpers_protocol import StallingLLM, StallingTTS, eventually, user_text, validated
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session


def start_turn(transport: MemoryTransport, **response: Any) -> None:
    transport.send_event({"type": "conversation.item.create", "item": user_text("Hi")})
    create: dict[str, Any] = {"type": "response.create"}
    if response:
        create["response"] = response
    transport.send_event(create)


def dones(sent: list[str]) -> list[dict[str, Any]]:
    events = [validated(text) for text in sent]
    return [e["response"] for e in events if e["type"] == "response.done"]


async def test_cancel_stops_the_language_model() -> None:
    llm = StallingLLM()
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS())) as run:
        start_turn(run.transport, output_modalities=["text"])
        await run.transport.events_until("response.output_text.delta")
        run.transport.send_event({"type": "response.cancel"})
        tail = await run.transport.events_until("response.done")
        assert [e["type"] for e in tail] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        done = tail[-1]["response"]
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["content"][0]["text"] == "Hello"
        async with asyncio.timeout(1):
            await llm.closed.wait()
        llm.release.set()  # too late: nothing more may come of it
        run.transport.send_event({"type": "input_audio_buffer.clear"})
        assert (await run.transport.next_event())["type"] == "input_audio_buffer.cleared"
    assert len(dones(run.transport.sent)) == 1


async def test_cancel_stops_speech_synthesis() -> None:
    tts = StallingTTS()
    llm = ScriptedLLM([text_script("One sentence here.")])
    async with running_session(EngineSet(llm=llm, tts=tts)) as run:
        start_turn(run.transport)
        await run.transport.events_until("response.output_audio.delta")
        run.transport.send_event({"type": "response.cancel"})
        done = (await run.transport.events_until("response.done"))[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["output"][0]["status"] == "incomplete"
        async with asyncio.timeout(1):
            await tts.closed.wait()
    assert len(dones(run.transport.sent)) == 1


async def test_a_new_response_can_start_right_after_a_cancel() -> None:
    llm = ScriptedLLM([text_script("x " * 50), text_script("Second.")])
    async with running_session(EngineSet(llm=llm, tts=StallingTTS())) as run:
        start_turn(run.transport)
        await run.transport.events_until("response.output_audio.delta")
        run.transport.send_event({"type": "response.cancel"})
        run.transport.send_event(
            {"type": "response.create", "response": {"output_modalities": ["text"]}}
        )
        await run.transport.events_until("response.done")
        second = (await run.transport.events_until("response.done"))[-1]["response"]
        assert second["status"] == "completed"
        assert second["output"][0]["content"][0]["text"] == "Second."


async def test_queued_audio_of_a_cancelled_response_is_dropped() -> None:
    # A socket that does not drain: the response's audio piles up in the outbox.
    llm = ScriptedLLM([text_script("A long answer that keeps on talking and talking.")])
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS())) as run:
        run.transport.hold()
        start_turn(run.transport)
        # Audio piles up behind the stalled socket, up to the media lane's high-water mark.
        await eventually(lambda: len(run.session.outbox) >= 64)
        run.transport.send_event({"type": "response.cancel"})
        await eventually(lambda: not run.connection.responses)
        run.transport.resume()
        events = await run.transport.events_until("response.done")
        audio = [e for e in events if e["type"] == "response.output_audio.delta"]
        assert len(audio) <= 1  # at most the one the socket was already writing
        assert events[-1]["response"]["status"] == "cancelled"
        # Nothing of that response follows its response.done.
        run.transport.send_event({"type": "input_audio_buffer.clear"})
        assert (await run.transport.next_event())["type"] == "input_audio_buffer.cleared"
