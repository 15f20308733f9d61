"""Whole turns through a running Session: scripted engines, in-memory transport, virtual time."""

from __future__ import annotations

import base64
from typing import Any

from _helpers_protocol import eventually, types, user_text, validated
from voxgate.engines.base import ChatRequest, LLMEvent, TextDelta
from voxgate.engines.errors import EngineError
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session

TEXT_TURN = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]


async def ask(transport: MemoryTransport, text: str, **response: Any) -> list[dict[str, Any]]:
    """A user text item and a response.create; the events up to that response's end."""
    transport.send_event({"type": "conversation.item.create", "item": user_text(text)})
    await transport.events_until("conversation.item.done")
    create: dict[str, Any] = {"type": "response.create"}
    if response:
        create["response"] = response
    transport.send_event(create)
    return await transport.events_until("response.done")


async def test_text_turn_end_to_end() -> None:
    llm = ScriptedLLM([text_script("Hello there, friend.")])
    engines = EngineSet(llm=llm, tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        created = await run.transport.next_event()
        assert created["type"] == "session.created"
        turn = await ask(run.transport, "Hi!", output_modalities=["text"])
        assert types(turn) == [
            *TEXT_TURN,
            *["response.output_text.delta"] * 3,
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        done = turn[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["content"][0]["text"] == "Hello there, friend."
    # What the model was asked: the session's instructions and the user's words.
    [request] = llm.requests
    assert request.messages == [{"role": "user", "content": "Hi!"}]
    assert request.instructions == run.connection.config.instructions


async def test_audio_turn_speaks_each_sentence_after_its_transcript() -> None:
    tts = ScriptedTTS(ms_per_char=10)
    engines = EngineSet(llm=ScriptedLLM([text_script("One two. Three.")]), tts=tts)
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        turn = await ask(run.transport, "Count.")
        kinds = types(turn, audio=False)
        assert kinds[:4] == TEXT_TURN
        assert kinds[4:6] == ["response.output_audio_transcript.delta"] * 2
        assert kinds[6:] == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        # Each sentence's transcript comes before its audio.
        pieces = [e for e in turn if e["type"].startswith("response.output_audio")]
        assert pieces[0]["type"] == "response.output_audio_transcript.delta"
        second = next(i for i, e in enumerate(pieces) if e.get("delta") == " Three.")
        assert any(e["type"] == "response.output_audio.delta" for e in pieces[1:second])
        audio = b"".join(
            base64.b64decode(e["delta"]) for e in turn if e["type"] == "response.output_audio.delta"
        )
        assert len(audio) == 2 * round(24000 * tts.duration_ms("One two.Three.") / 1000)
        assert turn[-1]["response"]["output"][0]["content"][0]["transcript"] == "One two. Three."
    assert tts.texts == ["One two.", "Three."]


async def test_engine_error_fails_the_response_and_the_session_goes_on() -> None:
    llm = ScriptedLLM(
        [
            [TextDelta("Hmm"), EngineError("model server unreachable", origin="llm")],
            text_script("Back again."),
        ]
    )
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS()), validate=validated) as run:
        await run.transport.next_event()
        failed = (await ask(run.transport, "Hi", output_modalities=["text"]))[-1]["response"]
        assert failed["status"] == "failed"
        assert failed["status_details"]["error"]["message"] == "model server unreachable"
        assert failed["output"][0]["status"] == "incomplete"
        ok = (await ask(run.transport, "Again?", output_modalities=["text"]))[-1]["response"]
        assert ok["status"] == "completed"
        assert ok["output"][0]["content"][0]["text"] == "Back again."


def crash(request: ChatRequest) -> list[LLMEvent]:
    raise RuntimeError("kaboom")


async def test_unexpected_engine_exception_fails_the_response_and_the_session_goes_on() -> None:
    llm = ScriptedLLM([crash, text_script("Fine now.")])
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS()), validate=validated) as run:
        await run.transport.next_event()
        failed = (await ask(run.transport, "Hi"))[-1]["response"]
        assert failed["status"] == "failed"
        assert "kaboom" in failed["status_details"]["error"]["message"]
        ok = (await ask(run.transport, "Again?"))[-1]["response"]
        assert ok["status"] == "completed"
        assert ok["output"][0]["content"][0]["transcript"] == "Fine now."


async def test_tts_failure_fails_the_response() -> None:
    class BrokenTTS(ScriptedTTS):
        async def synthesize(self, text: str, *, voice: str, speed: float = 1.0):  # type: ignore[override]
            raise EngineError("voice not installed", origin="tts")
            yield b""

    llm = ScriptedLLM([text_script("Hello.")])
    async with running_session(EngineSet(llm=llm, tts=BrokenTTS()), validate=validated) as run:
        await run.transport.next_event()
        failed = (await ask(run.transport, "Hi"))[-1]["response"]
        assert failed["status"] == "failed"
        assert failed["status_details"]["error"]["message"] == "voice not installed"


async def test_client_errors_reach_the_client_and_the_session_stays_open() -> None:
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        run.transport.send_event("{oops")
        run.transport.send_event({"type": "response.cancel", "event_id": "c1"})
        first, second = await run.transport.next_event(), await run.transport.next_event()
        assert first["type"] == second["type"] == "error"
        assert second["error"]["code"] == "response_cancel_not_active"
        assert second["error"]["event_id"] == "c1"
        run.transport.send_event({"type": "input_audio_buffer.clear"})
        assert (await run.transport.next_event())["type"] == "input_audio_buffer.cleared"
        assert not run.transport.closed


async def test_audio_turn_keeps_its_order_over_a_slow_socket() -> None:
    tts = ScriptedTTS(ms_per_char=40)
    engines = EngineSet(llm=ScriptedLLM([text_script("First sentence. Second one.")]), tts=tts)
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        run.transport.hold()  # audio backs up behind the socket, control events keep coming
        run.transport.send_event({"type": "conversation.item.create", "item": user_text("Go")})
        run.transport.send_event({"type": "response.create"})
        await eventually(lambda: len(run.session.outbox) >= 64)
        run.transport.resume()
        turn = await run.transport.events_until("response.done")
    kinds = types(turn, audio=True)
    first_audio = kinds.index("response.output_audio.delta")
    last_audio = len(kinds) - 1 - kinds[::-1].index("response.output_audio.delta")
    second_piece = next(i for i, e in enumerate(turn) if e.get("delta") == " Second one.")
    assert first_audio < second_piece < last_audio
    assert "response.output_audio.delta" in kinds[first_audio:second_piece]
    assert kinds[last_audio + 1 :] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]


async def test_a_whole_audio_turn_queued_behind_a_stalled_socket_arrives_in_order() -> None:
    engines = EngineSet(llm=ScriptedLLM([text_script("Hi there. Bye.")]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        run.transport.hold()
        run.transport.send_event({"type": "conversation.item.create", "item": user_text("Go")})
        run.transport.send_event({"type": "response.create"})
        await eventually(lambda: run.connection.active_response_id is not None)
        await eventually(lambda: run.connection.active_response_id is None)  # all queued
        run.transport.resume()
        turn = await run.transport.events_until("response.done")
    kinds = types(turn, audio=False)
    assert kinds == [
        "conversation.item.added",
        "conversation.item.done",
        *TEXT_TURN,
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert types(turn)[-7] == "response.output_audio.delta"
