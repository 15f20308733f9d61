"""The transport-neutral playout core on virtual time: what was heard, where a barge-in cuts,
when a reply has finished playing, the queue's bound, pacing from the injected clock, and the
declared format (8 kHz G.711 straight through); plus the headless transport and DTMF."""

from __future__ import annotations

import asyncio

import pytest

from _helpers_protocol import eventually, settle, validated
from voxgate.audio import PCMU, pcm16_to_ulaw
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.clock import VirtualClock
from voxgate.session.engines import EngineSet
from voxgate.session.playout import (
    G711_ALAW,
    G711_ULAW,
    PCM16_8K,
    FramePacer,
    PlayoutCore,
    ServerPlayout,
    silence,
)
from voxgate.session.session import Session
from voxgate.session.testing import running_session
from voxgate.session.transport import TransportClosed
from voxgate.transports.headless import HeadlessTransport


def test_take_counts_what_was_heard_and_clear_cuts_there() -> None:
    core = PlayoutCore(PCM16_8K)
    core.play("r1", "i1", 0, b"\x01\x00" * 800)  # 100 ms at 8 kHz
    assert core.queued_s == pytest.approx(0.1)
    for _ in range(3):
        assert len(core.take(160)) == 320
    cut = core.clear(None)
    assert cut is not None and (cut.response_id, cut.item_id, cut.played_ms) == ("r1", "i1", 60)
    assert core.queued_s == 0
    assert core.clear(None) is None
    assert core.take(160) == bytes(320)  # silence after the cut


def test_a_reply_stops_once_its_last_sample_is_taken() -> None:
    stopped: list[str] = []
    core = PlayoutCore(PCM16_8K, on_stopped=stopped.append)
    core.play("r1", "i1", 0, b"\x05\x00" * 200)
    core.end("r1")
    assert stopped == []
    frame = core.take(160)
    assert frame == b"\x05\x00" * 160 and stopped == []
    frame = core.take(160)
    assert frame == b"\x05\x00" * 40 + bytes(240)  # the tail, then silence
    assert stopped == ["r1"]
    core.end("r2")  # a reply that queued no audio never played: nothing to report
    assert stopped == ["r1"]


def test_clear_of_one_reply_keeps_the_next_queued() -> None:
    core = PlayoutCore(G711_ULAW)
    core.play("r1", "i1", 0, b"\x10" * 160)
    core.play("r2", "i2", 0, b"\x20" * 160)
    core.take(80)
    cut = core.clear("r1")
    assert cut is not None and cut.played_ms == 10
    assert core.take(160) == b"\x20" * 160
    assert core.clear("r1") is None


def test_silence_is_the_formats_own_zero() -> None:
    assert PlayoutCore(G711_ULAW).take(4) == pcm16_to_ulaw(bytes(8)) == silence(G711_ULAW, 4)
    assert silence(G711_ALAW, 2) == b"\xd5\xd5"


async def test_pacing_runs_on_the_injected_clock_and_skips_stalls() -> None:
    clock = VirtualClock()
    pacer = FramePacer(clock, 0.02)
    assert await pacer.next_frame() == 0
    waiting = asyncio.create_task(pacer.next_frame())
    await clock.advance(0.01)
    assert not waiting.done()
    await clock.advance(0.01)
    assert waiting.done() and waiting.result() == 1
    await clock.advance(1.0)  # a stall: no burst of 50 late frames, the count jumps instead
    assert await pacer.next_frame() == 51
    assert pacer.frames == 52


async def test_the_queue_bound_holds_a_response_back_until_playout_catches_up() -> None:
    playout = ServerPlayout(PCM16_8K, max_queued_s=0.1)
    playout.play("r1", "i1", 0, bytes(2 * 800))  # 100 ms: at the bound
    waiting = asyncio.create_task(playout.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    playout.take(160)
    await asyncio.wait_for(waiting, 1)
    playout.play("r1", "i1", 0, bytes(2 * 800))
    blocked = asyncio.create_task(playout.room())
    await asyncio.sleep(0)
    assert not blocked.done()
    playout.close()  # the call ended: nobody waits forever
    await asyncio.wait_for(blocked, 1)


async def test_finished_replies_are_reported_to_the_session() -> None:
    playout = ServerPlayout(G711_ULAW)
    stopped: list[str] = []
    done = asyncio.Event()

    async def on_stopped(response_id: str) -> None:
        stopped.append(response_id)
        done.set()

    playout.bind(on_stopped)
    playout.play("r1", "i1", 0, b"\x00" * 100)
    playout.end("r1")
    playout.take(160)
    await asyncio.wait_for(done.wait(), 1)
    assert stopped == ["r1"]


async def test_a_phone_session_plays_g711_straight_through_and_hears_g711() -> None:
    """A session whose output is μ-law feeds a μ-law playout byte for byte (no 24 kHz hop),
    and μ-law microphone audio lands in a μ-law input buffer unchanged."""
    playout = ServerPlayout(G711_ULAW)
    tts = ScriptedTTS()
    engines = EngineSet(llm=ScriptedLLM([text_script("Hello there.")]), tts=tts)
    async with running_session(engines, validate=validated, playout=playout) as run:
        run.transport.send_event(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                        "output": {"format": {"type": "audio/pcmu"}},
                    },
                },
            }
        )
        await run.transport.events_until("session.updated")
        line = pcm16_to_ulaw(b"\x00\x10" * 800)
        await run.session.track_audio(line, PCMU)
        await eventually(lambda: bytes(run.connection.input_buffer) == line)
        run.transport.send_event({"type": "response.create"})
        await run.transport.events_until("output_audio_buffer.started")
        await eventually(lambda: playout.core.queued_s > 0)
        # What the reply queued is the μ-law the session's own converter made: the same
        # bytes a WebSocket client would have got in response.output_audio.delta.
        queued = playout.take(int(playout.core.queued_s * 8000))
        assert len(queued) > 0 and queued != silence(G711_ULAW, len(queued))


async def test_dtmf_reaches_the_client_as_the_sdk_event() -> None:
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        await run.transport.events_until("session.created")
        await run.session.dtmf("5")
        event = await run.transport.next_event()
        assert event["type"] == "input_audio_buffer.dtmf_event_received"
        assert event["event"] == "5"
        assert event["received_at"] == int(run.clock.wall())
        with pytest.raises(ValueError, match="DTMF"):
            await run.session.dtmf("x")


async def test_headless_transport_drops_sends_and_ends_with_the_call() -> None:
    transport = HeadlessTransport()
    session = Session(
        RealtimeConnection(),
        EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS()),
        transport,
        clock=VirtualClock(),
    )
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.01)
    assert transport.dropped >= 1  # session.created went nowhere
    await transport.close(1000, "caller hung up")
    ended = await asyncio.wait_for(task, 5)
    assert ended.reason == "client_closed"
    with pytest.raises(TransportClosed):
        await transport.send("{}")


async def test_client_events_wait_for_the_disclosure_and_follow_it_in_order() -> None:
    engines = EngineSet(llm=ScriptedLLM([text_script("Welcome.")]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated) as run:
        run.session.disclose("Calls are answered by a computer.")
        run.transport.send_event({"type": "response.create"})  # an app's greeting, at once
        events = await run.transport.events_until(
            lambda e: e["type"] == "response.done" and e["response"]["metadata"] is None
        )
    kinds = [e["type"] for e in events]
    assert "error" not in kinds
    created = [e["response"] for e in events if e["type"] == "response.created"]
    assert [r["metadata"] for r in created] == [{"voxgate": "disclosure"}, None]
    done = [e for e in events if e["type"] == "response.done"]
    said = done[0]["response"]["output"][0]["content"][0]["transcript"]
    assert said == "Calls are answered by a computer."
    assert kinds.index("response.done") < kinds.index(
        "response.created", kinds.index("response.done")
    )


async def test_the_callers_audio_is_not_heard_until_the_disclosure_has_played() -> None:
    playout = ServerPlayout(G711_ULAW)
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS())
    async with running_session(engines, validate=validated, playout=playout) as run:
        run.session.disclose("Hello.")
        await run.transport.events_until("response.done")
        assert playout.core.queued_s > 0  # generated, not yet played
        await run.session.track_audio(pcm16_to_ulaw(b"\x00\x30" * 800), PCMU)
        await settle()
        assert not run.connection.input_buffer  # speech over the disclosure is not heard
        playout.take(int(playout.core.queued_s * 8000) + 160)
        await run.transport.events_until("output_audio_buffer.stopped")
        await run.session.track_audio(pcm16_to_ulaw(b"\x00\x30" * 800), PCMU)
        await eventually(lambda: len(run.connection.input_buffer) > 0)
