"""Speculative decoding: the words so far are decoded when a pause begins inside a turn; the
result is the transcript if the turn ends there, and is discarded if the user goes on."""

from __future__ import annotations

from typing import Any

from _helpers_protocol import validated
from test_session_vad import append, engines, only, update
from voxgate.engines.testing import ScriptedSTTStream, silence_pcm, tone_pcm
from voxgate.session.listener import PAUSE_MS
from voxgate.session.testing import running_session

RATE = 24000
SENTENCE = "I want to book a table for four people tonight"


def speech(*parts: tuple[str, float]) -> bytes:
    out = b""
    for kind, ms in parts:
        out += (tone_pcm if kind == "talk" else silence_pcm)(ms, sample_rate=RATE)
    return out


def transcript_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("conversation.item.input_audio_trans")]


async def test_pause_time_decode_is_the_transcript_when_the_turn_ends_there() -> None:
    eng = engines(["what is the weather"], ["Sunny."])
    async with running_session(eng, validate=validated) as run:
        update(run.transport, transcription={"model": "whisper-1"})
        append(run.transport, speech(("quiet", 500), ("talk", 1200), ("quiet", 800)))
        events = await run.transport.events_until("response.done")
        [stream] = eng.stt.streams  # type: ignore[attr-defined]
        assert isinstance(stream, ScriptedSTTStream)
        # Decoded once, at the pause; no second decode at the end of the turn.
        assert stream.peeks == ["what is the weather"] and not stream.finished
        kinds = [e["type"] for e in transcript_events(events)]
        assert kinds == [
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
        ]
        completed = only(events, "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == "what is the weather"
        assert 1.9 <= completed["usage"]["seconds"] <= 2.1  # the whole turn, trailing silence too


async def test_speculative_transcript_is_discarded_when_the_user_goes_on() -> None:
    # 200 ms per word: a 600 ms pause after 1 s of speech has revealed about 6 words.
    eng = engines([SENTENCE], ["Booked."])
    pause_ms = 300  # a pause inside the sentence: longer than PAUSE_MS, shorter than 500
    assert PAUSE_MS < pause_ms < 500
    async with running_session(eng, validate=validated) as run:
        update(run.transport, transcription={"model": "whisper-1"})
        audio = speech(("quiet", 500), ("talk", 1000), ("quiet", pause_ms), ("talk", 1000))
        append(run.transport, audio + speech(("quiet", 800)))
        events = await run.transport.events_until("response.done")
        [stream] = eng.stt.streams  # type: ignore[attr-defined]
        assert isinstance(stream, ScriptedSTTStream)
        # One decode at the mid-sentence pause (words so far), one at the end.
        first, last = stream.peeks
        assert first and SENTENCE.startswith(first) and first != SENTENCE
        assert last == SENTENCE
        # One turn; the client and the model see the whole sentence, never the early guess.
        assert len([e for e in events if e["type"].endswith("speech_stopped")]) == 1
        deltas = [e["delta"] for e in transcript_events(events) if e["type"].endswith("delta")]
        assert deltas == [SENTENCE]
        completed = only(events, "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == SENTENCE
        [request] = eng.llm.requests  # type: ignore[attr-defined]
        assert request.messages[-1]["content"] == SENTENCE


async def test_speech_after_the_last_decode_is_decoded_at_the_end() -> None:
    # server_vad with a silence shorter than the pause threshold: no pause-time decode is
    # ever asked for, so the end of the turn decodes everything.
    eng = engines([SENTENCE], ["Booked."])
    async with running_session(eng, validate=validated) as run:
        vad = {"type": "server_vad", "silence_duration_ms": 100}
        update(run.transport, transcription={"model": "whisper-1"}, turn_detection=vad)
        append(run.transport, speech(("quiet", 500), ("talk", 2200), ("quiet", 400)))
        events = await run.transport.events_until("response.done")
        [stream] = eng.stt.streams  # type: ignore[attr-defined]
        assert stream.peeks == [] and stream.finished
        completed = only(events, "conversation.item.input_audio_transcription.completed")
        assert completed["transcript"] == SENTENCE
