"""Session watchdogs on virtual time: maximum duration and idle timeout end the session with
an `error` event that says why, then the transport closes."""

from __future__ import annotations

from _helpers_protocol import StallingLLM, settle, user_text, validated
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.engines import EngineSet
from voxgate.session.session import SessionLimits
from voxgate.session.testing import RunningSession, running_session


def engines() -> EngineSet:
    return EngineSet(llm=StallingLLM(), tts=ScriptedTTS())


async def still_open(run: RunningSession) -> bool:
    """Round-trip one harmless client event; False if the session has ended."""
    if run.transport.closed:
        return False
    run.transport.send_event({"type": "input_audio_buffer.clear"})
    return (await run.transport.next_event())["type"] == "input_audio_buffer.cleared"


async def test_max_duration_ends_the_session_with_a_reason() -> None:
    limits = SessionLimits(max_duration_s=60, idle_timeout_s=None)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        created = await run.transport.next_event()
        assert created["session"]["expires_at"] == int(run.clock.wall() + 60)
        await run.clock.advance(59)
        assert await still_open(run)
        await run.clock.advance(1)
        ended = await run.ended()
    assert ended.reason == "expired"
    [error] = await run.transport.rest()
    assert error["type"] == "error"
    assert error["error"]["code"] == "session_duration_exceeded"
    assert "maximum duration of 60 seconds" in error["error"]["message"]
    assert error["error"]["event_id"] is None
    assert run.transport.closed


async def test_max_duration_ends_a_running_response_with_its_done_first() -> None:
    limits = SessionLimits(max_duration_s=60, idle_timeout_s=None)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        run.transport.send_event(
            {"type": "response.create", "response": {"output_modalities": ["text"]}}
        )
        await run.transport.events_until("response.output_text.delta")
        await run.clock.advance(60)
        await run.ended()
    tail = await run.transport.rest()
    assert [e["type"] for e in tail][-2:] == ["response.done", "error"]
    assert tail[-2]["response"]["status"] == "cancelled"
    assert tail[-1]["error"]["code"] == "session_duration_exceeded"


async def test_idle_session_is_closed_with_a_reason() -> None:
    limits = SessionLimits(idle_timeout_s=30)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        await run.transport.next_event()
        await run.clock.advance(29.9)
        await settle()
        assert not run.transport.closed
        await run.clock.advance(0.1)
        ended = await run.ended()
    assert ended.reason == "idle"
    [error] = await run.transport.rest()
    assert error["error"]["code"] == "idle_timeout"
    assert "30 seconds" in error["error"]["message"]
    assert run.transport.closed


async def test_client_events_keep_the_session_alive() -> None:
    limits = SessionLimits(idle_timeout_s=30)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        await run.transport.next_event()
        for _ in range(5):
            await run.clock.advance(20)
            assert await still_open(run)
        # 100 s in, and the last event just now: quiet from here on.
        await run.clock.advance(29)
        await settle()
        assert not run.transport.closed
        await run.clock.advance(1)
        assert (await run.ended()).reason == "idle"


async def test_a_running_response_keeps_the_session_alive() -> None:
    llm = StallingLLM()
    limits = SessionLimits(idle_timeout_s=30)
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS()), limits=limits) as run:
        run.transport.send_event({"type": "conversation.item.create", "item": user_text("Hi")})
        run.transport.send_event(
            {"type": "response.create", "response": {"output_modalities": ["text"]}}
        )
        await run.transport.events_until("response.output_text.delta")
        await run.clock.advance(125)
        await settle()
        assert not run.transport.closed
        llm.release.set()
        await run.transport.events_until("response.done")
        # The idle time counts from the end of the response.
        await run.clock.advance(29)
        await settle()
        assert not run.transport.closed
        await run.clock.advance(1)
        assert (await run.ended()).reason == "idle"


async def test_microphone_audio_from_a_media_track_keeps_the_session_alive() -> None:
    # WebRTC: the user talks on the track and may send no client event at all.
    limits = SessionLimits(idle_timeout_s=30)
    async with running_session(engines(), limits=limits, validate=validated) as run:
        await run.transport.next_event()
        for _ in range(5):
            await run.clock.advance(20)
            await run.session.track_audio(bytes(960))  # 20 ms of 24 kHz PCM16
            await settle()
            assert not run.transport.closed
        await run.clock.advance(30)
        assert (await run.ended()).reason == "idle"
