"""Turn detection and input transcription through a running Session, on scripted engines.

The scripted VAD calls a window speech when it is loud (a tone), so each test knows exactly
where speech starts and stops in the audio it sends; time is audio time, so the appends need
not be paced.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from _helpers_protocol import validated
from voxgate.audio.g711 import pcm16_to_ulaw
from voxgate.audio.resample import resample
from voxgate.engines.errors import EngineError
from voxgate.engines.local.silero import SileroVAD
from voxgate.engines.testing import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    silence_pcm,
    text_script,
    tone_pcm,
)
from voxgate.session.context import UNTRANSCRIBED
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session

RATE = 24000
CHUNK = 960  # 20 ms of pcm16 at 24 kHz


def utterance(before_ms: float, speech_ms: float, after_ms: float) -> bytes:
    return (
        silence_pcm(before_ms, sample_rate=RATE)
        + tone_pcm(speech_ms, sample_rate=RATE)
        + silence_pcm(after_ms, sample_rate=RATE)
    )


def append(transport: MemoryTransport, audio: bytes, chunk: int = CHUNK) -> None:
    for i in range(0, len(audio), chunk):
        piece = base64.b64encode(audio[i : i + chunk]).decode()
        transport.send_event({"type": "input_audio_buffer.append", "audio": piece})


async def append_live(transport: MemoryTransport, audio: bytes) -> None:
    """Append like a live microphone: the session's other tasks (speech-to-text) run between
    chunks, so partial transcripts keep up with the audio as they do in real time."""
    for i in range(0, len(audio), CHUNK):
        append(transport, audio[i : i + CHUNK])
        for _ in range(5):
            await asyncio.sleep(0)


def engines(
    transcripts: list[str | EngineError], answers: list[str], *, llm_delay: float = 0.0
) -> EngineSet:
    return EngineSet(
        llm=ScriptedLLM([text_script(a) for a in answers], delay=llm_delay),
        tts=ScriptedTTS(),
        stt=ScriptedSTT(transcripts),
        vad=ScriptedVAD(),
    )


def update(transport: MemoryTransport, **audio_input: Any) -> None:
    session = {"type": "realtime", "audio": {"input": audio_input}}
    transport.send_event({"type": "session.update", "session": session})


def only(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [event] = [e for e in events if e["type"] == kind]
    return event


async def test_a_spoken_turn_is_detected_committed_transcribed_and_answered() -> None:
    eng = engines(["what is the weather"], ["It is sunny."])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, transcription={"model": "whisper-1"})
        append(t, utterance(1000, 1200, 800))
        events = await t.events_until("response.done")
        kinds = [e["type"] for e in events if e["type"] != "response.output_audio.delta"]
        assert kinds[:7] == [
            "session.created",
            "session.updated",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
        ]
        started = only(events, "input_audio_buffer.speech_started")
        stopped = only(events, "input_audio_buffer.speech_stopped")
        committed = only(events, "input_audio_buffer.committed")
        # Speech began at 1000 ms; the turn starts prefix_padding_ms (300) earlier, to the
        # VAD's 32 ms window. It ends silence_duration_ms (500) after the speech did.
        assert abs(started["audio_start_ms"] - 700) <= 32
        assert abs(stopped["audio_end_ms"] - 2700) <= 32
        assert started["item_id"] == stopped["item_id"] == committed["item_id"]
        item_id = committed["item_id"]
        completed = only(events, "conversation.item.input_audio_transcription.completed")
        assert completed["item_id"] == item_id
        assert completed["transcript"] == "what is the weather"
        assert completed["usage"]["type"] == "duration"
        assert 1.5 <= completed["usage"]["seconds"] <= 2.1  # the turn's audio, 2.0 s
        done = events[-1]["response"]
        assert done["status"] == "completed"
        # The model heard the transcript; the item holds exactly the turn's audio.
        [request] = eng.llm.requests  # type: ignore[attr-defined]
        assert request.messages[-1] == {"role": "user", "content": "what is the weather"}
        audio_ms = len(run.connection.conversation.audio[item_id]) / 48
        assert abs(audio_ms - (stopped["audio_end_ms"] - started["audio_start_ms"])) <= 1


async def test_transcripts_reach_the_model_even_when_the_client_did_not_ask_for_them() -> None:
    eng = engines(["book a table"], ["Done."])
    async with running_session(eng, validate=validated) as run:
        append(run.transport, utterance(500, 800, 700))
        events = await run.transport.events_until("response.done")
        assert not [e for e in events if "input_audio_transcription" in e["type"]]
        [request] = eng.llm.requests  # type: ignore[attr-defined]
        assert request.messages[-1]["content"] == "book a table"


async def test_speech_during_a_response_cancels_it_and_starts_the_next_turn() -> None:
    long_answer = " ".join(f"word{i}." for i in range(60))
    eng = engines(["tell me a story", "stop"], [long_answer, "Okay."], llm_delay=0.01)
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        append(t, utterance(300, 600, 600))
        first = await t.events_until("response.output_audio.delta")
        rid = only(first, "response.created")["response"]["id"]
        append(t, utterance(100, 600, 600))
        events = await t.events_until(
            lambda e: e["type"] == "response.done" and e["response"]["id"] == rid
        )
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        # Nothing more of the reply after the interruption, only its end.
        after = kinds[kinds.index("input_audio_buffer.speech_started") + 1 :]
        assert "response.output_audio.delta" not in after
        cancelled = events[-1]["response"]
        assert cancelled["status"] == "cancelled"
        assert cancelled["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert eng.llm.aborted == 1  # type: ignore[attr-defined]
        assistant = first[[e["type"] for e in first].index("response.output_item.added")]
        # The client played part of the reply: it truncates the item to what was heard.
        t.send_event(
            {
                "type": "conversation.item.truncate",
                "item_id": assistant["item"]["id"],
                "content_index": 0,
                "audio_end_ms": 40,
            }
        )
        rest = await t.events_until("response.done")
        truncated = only(rest, "conversation.item.truncated")
        assert truncated["audio_end_ms"] == 40
        assert only(rest, "input_audio_buffer.speech_stopped")
        assert rest[-1]["response"]["status"] == "completed"
        second = eng.llm.requests[1]  # type: ignore[attr-defined]
        assert second.messages[-1] == {"role": "user", "content": "stop"}


async def test_without_interrupt_response_the_reply_goes_on() -> None:
    long_answer = " ".join(f"word{i}." for i in range(30))
    eng = engines(["first", "second"], [long_answer], llm_delay=0.01)
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection={"type": "server_vad", "interrupt_response": False})
        append(t, utterance(300, 600, 600))
        await t.events_until("response.output_audio.delta")
        append(t, utterance(100, 600, 600))
        events = await t.events_until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        # The second turn was heard and committed, but not answered on its own.
        assert only(events, "input_audio_buffer.committed")
        assert not [e for e in events if e["type"] == "response.created"]
        assert len(eng.llm.requests) == 1  # type: ignore[attr-defined]


async def test_create_response_false_commits_without_answering() -> None:
    eng = engines(["hello"], [])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection={"type": "server_vad", "create_response": False})
        append(t, utterance(300, 600, 700))
        await t.events_until("input_audio_buffer.committed")
        # The client decides when to answer.
        t.send_event({"type": "conversation.item.create", "item": _text_item("ping")})
        events = await t.events_until("conversation.item.done")
        assert not [e for e in events if e["type"].startswith("response.")]


async def test_two_utterances_with_a_short_pause_are_one_turn_or_two_as_configured() -> None:
    audio = (
        utterance(300, 600, 300)
        + tone_pcm(600, sample_rate=RATE)
        + silence_pcm(800, sample_rate=RATE)
    )
    for silence_ms, turns in ((500, 1), (200, 2)):
        eng = engines(["one", "two"], ["A.", "B."])
        async with running_session(eng, validate=validated) as run:
            t = run.transport
            update(
                t,
                turn_detection={
                    "type": "server_vad",
                    "silence_duration_ms": silence_ms,
                    "create_response": False,
                },
            )
            append(t, audio)
            # A marker after the audio: everything the audio caused comes before its reply.
            t.send_event({"type": "input_audio_buffer.clear"})
            events = await t.events_until("input_audio_buffer.cleared")
            kinds = [e["type"] for e in events]
            assert kinds.count("input_audio_buffer.speech_started") == turns, silence_ms
            assert kinds.count("input_audio_buffer.committed") == turns, silence_ms


async def test_silence_only_makes_no_turn_until_the_idle_timeout() -> None:
    eng = engines([""], ["Are you still there?"])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection={"type": "server_vad", "idle_timeout_ms": 6000})
        append(t, silence_pcm(5500, sample_rate=RATE))
        t.send_event({"type": "input_audio_buffer.clear"})
        quiet = await t.events_until("input_audio_buffer.cleared")
        assert [e["type"] for e in quiet][-1:] == ["input_audio_buffer.cleared"]
        assert not [e for e in quiet if e["type"].startswith("input_audio_buffer.speech")]
        append(t, silence_pcm(1000, sample_rate=RATE))
        events = await t.events_until("response.done")
        timeout = only(events, "input_audio_buffer.timeout_triggered")
        assert abs(timeout["audio_end_ms"] - timeout["audio_start_ms"] - 6000) <= 32
        committed = only(events, "input_audio_buffer.committed")
        assert committed["item_id"] == timeout["item_id"]
        assert events[-1]["response"]["status"] == "completed"


async def test_manual_commit_without_turn_detection_is_transcribed_for_the_model() -> None:
    eng = engines(["order a pizza"], ["Sure."])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection=None, transcription={"model": "whisper-1"})
        append(t, utterance(300, 800, 300))
        t.send_event({"type": "input_audio_buffer.commit"})
        t.send_event({"type": "response.create"})
        events = await t.events_until("response.done")
        assert not [e for e in events if e["type"].startswith("input_audio_buffer.speech")]
        completed = only(events, "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == "order a pizza"
        [request] = eng.llm.requests  # type: ignore[attr-defined]
        assert request.messages[-1]["content"] == "order a pizza"


async def test_a_failed_transcription_is_reported_and_the_reply_still_comes() -> None:
    failure = EngineError("decoder crashed", origin="stt", retryable=True)
    eng = engines([failure], ["Sorry, could you say that again?"])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, transcription={"model": "whisper-1"})
        append(t, utterance(300, 600, 700))
        events = await t.events_until("response.done")
        failed = only(events, "conversation.item.input_audio_transcription.failed")
        assert "decoder crashed" in failed["error"]["message"]
        assert events[-1]["response"]["status"] == "completed"
        [request] = eng.llm.requests  # type: ignore[attr-defined]
        assert request.messages[-1]["content"] == UNTRANSCRIBED


async def test_g711_input_is_heard() -> None:
    eng = engines(["hello there"], ["Hi."])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, format={"type": "audio/pcmu"})
        pcm8k = resample(utterance(1000, 800, 800), RATE, 8000)
        append(t, pcm16_to_ulaw(pcm8k), chunk=160)
        events = await t.events_until("response.done")
        started = only(events, "input_audio_buffer.speech_started")
        stopped = only(events, "input_audio_buffer.speech_stopped")
        assert abs(started["audio_start_ms"] - 700) <= 40
        assert abs(stopped["audio_end_ms"] - 2300) <= 40
        item_id = only(events, "input_audio_buffer.committed")["item_id"]
        # The item keeps the audio as sent: one μ-law byte per sample at 8 kHz.
        audio = run.connection.conversation.audio[item_id]
        assert abs(len(audio) / 8 - (stopped["audio_end_ms"] - started["audio_start_ms"])) <= 1


async def test_semantic_vad_ends_a_complete_utterance_quickly() -> None:
    eng = engines(["i would like a pizza"], ["Sure."])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection={"type": "semantic_vad", "eagerness": "high"})
        await append_live(t, utterance(300, 1200, 1500))
        events = await t.events_until("response.done")
        stopped = only(events, "input_audio_buffer.speech_stopped")
        # Speech ended at 1500 ms; a complete sentence at high eagerness waits ~200 ms.
        assert 1500 + 150 <= stopped["audio_end_ms"] <= 1500 + 300


async def test_semantic_vad_waits_longer_after_a_trailing_conjunction() -> None:
    eng = engines(["i would like a pizza and"], ["Sure."])
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        update(t, turn_detection={"type": "semantic_vad", "eagerness": "high"})
        await append_live(t, utterance(300, 1200, 1500) + silence_pcm(1000, sample_rate=RATE))
        events = await t.events_until("response.done")
        stopped = only(events, "input_audio_buffer.speech_stopped")
        # High eagerness caps the wait at 2 s; "and" earns nearly all of it.
        assert 1500 + 1500 <= stopped["audio_end_ms"] <= 1500 + 2000 + 32


def _text_item(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


async def test_noise_without_speech_makes_no_turn() -> None:
    # The real Silero model: steady hiss and hum are not speech, however loud.
    rng = np.random.default_rng(7)
    seconds = np.arange(RATE * 4) / RATE
    hiss = rng.normal(0, 0.05 * 32767, seconds.size)  # white noise at about -26 dBFS
    hum = 0.1 * 32767 * np.sin(2 * np.pi * 50 * seconds)  # mains hum
    noise = np.clip(hiss + hum, -32768, 32767).astype("<i2").tobytes()
    eng = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=ScriptedSTT([]), vad=SileroVAD())
    async with running_session(eng, validate=validated) as run:
        t = run.transport
        append(t, noise)
        t.send_event({"type": "input_audio_buffer.clear"})
        events = await t.events_until("input_audio_buffer.cleared")
        assert [e["type"] for e in events] == ["session.created", "input_audio_buffer.cleared"]
