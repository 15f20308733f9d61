"""The scripted engines that session tests stand on: they must behave as documented."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voxgate.engines.base import (
    ChatRequest,
    LLMDone,
    LLMEngine,
    STTEngine,
    STTStream,
    TextDelta,
    ToolCallDelta,
    Transcript,
    TTSEngine,
    VADEngine,
    VADStream,
)
from voxgate.engines.errors import EngineError
from voxgate.engines.testing import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    silence_pcm,
    text_script,
    tone_pcm,
    tool_call_script,
)


def ask(text: str) -> ChatRequest:
    return ChatRequest(instructions="", messages=[{"role": "user", "content": text}])


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2)))


async def test_every_fake_satisfies_its_protocol() -> None:
    # Annotated so that mypy checks the signatures too; isinstance only checks the names.
    llm: LLMEngine = ScriptedLLM([])
    tts: TTSEngine = ScriptedTTS()
    stt: STTEngine = ScriptedSTT(["hi"])
    stt_stream: STTStream = await stt.open_stream()
    vad: VADEngine = ScriptedVAD()
    vad_stream: VADStream = vad.open_stream()
    assert isinstance(llm, LLMEngine)
    assert isinstance(tts, TTSEngine)
    assert isinstance(stt, STTEngine)
    assert isinstance(stt_stream, STTStream)
    assert isinstance(vad, VADEngine)
    assert isinstance(vad_stream, VADStream)


# ---------------------------------------------------------------------------------------------
# ScriptedLLM
# ---------------------------------------------------------------------------------------------


async def test_llm_plays_scripts_in_order_and_records_requests() -> None:
    llm = ScriptedLLM(
        [text_script("Hello there"), lambda req: text_script(f"Echo {len(req.messages)}")]
    )

    first = [e async for e in llm.stream(ask("one"))]
    second = [e async for e in llm.stream(ask("two"))]

    assert first == [TextDelta("Hello"), TextDelta(" there"), LLMDone("stop")]
    assert second == [TextDelta("Echo"), TextDelta(" 1"), LLMDone("stop")]
    assert [r.messages[0]["content"] for r in llm.requests] == ["one", "two"]


async def test_llm_raises_a_scripted_error_where_it_stands() -> None:
    boom = EngineError("backend fell over", origin="llm", retryable=True)
    llm = ScriptedLLM([[TextDelta("Par"), boom, TextDelta("never")]])
    received = []
    with pytest.raises(EngineError) as info:
        async for event in llm.stream(ask("x")):
            received.append(event)
    assert received == [TextDelta("Par")]
    assert info.value is boom


async def test_llm_without_a_script_left_says_so() -> None:
    llm = ScriptedLLM([text_script("only one")])
    [e async for e in llm.stream(ask("a"))]
    with pytest.raises(RuntimeError, match="request #2 but has only 1 scripts"):
        [e async for e in llm.stream(ask("b"))]


async def test_llm_counts_streams_closed_early() -> None:
    llm = ScriptedLLM([text_script("a b c"), text_script("d")])
    stream = llm.stream(ask("x"))
    await anext(stream)
    await stream.aclose()
    [e async for e in llm.stream(ask("y"))]
    assert llm.aborted == 1


async def test_llm_waits_the_delay_before_each_event() -> None:
    llm = ScriptedLLM([text_script("a b")], delay=0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = [e async for e in llm.stream(ask("x"))]
    assert len(events) == 3
    assert loop.time() - started >= 0.06


def test_tool_call_script_splits_arguments() -> None:
    events = tool_call_script("get_weather", {"city": "Paris"}, call_id="call_9")
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].call_id == "call_9" and calls[0].name == "get_weather"
    assert len(calls) == 2
    assert "".join(c.arguments for c in calls) == '{"city": "Paris"}'
    assert events[-1] == LLMDone("tool_calls")


# ---------------------------------------------------------------------------------------------
# ScriptedTTS
# ---------------------------------------------------------------------------------------------


async def test_tts_speaks_a_tone_60_ms_per_character_in_20_ms_chunks() -> None:
    tts = ScriptedTTS()
    chunks = [c async for c in tts.synthesize("hello", voice="alloy")]

    assert tts.sample_rate == 24000
    assert len(b"".join(chunks)) == 2 * 24000 * 300 // 1000  # 5 characters → 300 ms
    assert len(chunks) == 15
    assert all(len(c) == 2 * 480 for c in chunks)
    assert all(rms(c) > 0.1 for c in chunks)
    assert tts.texts == ["hello"]
    assert tts.voices == ["alloy"]


async def test_tts_is_deterministic_and_speed_shortens_it() -> None:
    tts = ScriptedTTS()
    once = b"".join([c async for c in tts.synthesize("same text", voice="ash")])
    again = b"".join([c async for c in tts.synthesize("same text", voice="ash")])
    fast = b"".join([c async for c in tts.synthesize("same text", voice="ash", speed=2.0)])
    assert once == again
    assert len(fast) == len(once) // 2


async def test_tts_stops_when_the_synthesis_is_closed() -> None:
    tts = ScriptedTTS()
    stream = tts.synthesize("a long sentence to speak", voice="alloy")
    await anext(stream)
    await stream.aclose()
    assert tts.aborted == 1
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_tts_aclose_stops_syntheses_in_progress() -> None:
    tts = ScriptedTTS()
    stream = tts.synthesize("a long sentence to speak", voice="alloy")
    got = [await anext(stream)]
    await tts.aclose()
    got += [c async for c in stream]
    assert len(got) == 1  # the text needs 72 chunks; none comes after the close


async def test_tts_paces_at_real_time_when_asked() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    [c async for c in ScriptedTTS(realtime=True).synthesize("abc", voice="alloy")]  # 180 ms
    paced = loop.time() - started
    started = loop.time()
    [c async for c in ScriptedTTS().synthesize("abc", voice="alloy")]
    instant = loop.time() - started
    assert 0.17 <= paced < 0.5
    assert instant < 0.05


# ---------------------------------------------------------------------------------------------
# ScriptedSTT
# ---------------------------------------------------------------------------------------------


async def test_stt_reveals_the_transcript_word_by_word() -> None:
    stt = ScriptedSTT(["turn on the lights", "thanks"])
    stream = await stt.open_stream(language="en")

    partials = [await stream.push(tone_pcm(100, sample_rate=16000)) for _ in range(5)]
    result = await stream.finish()

    # One word per 200 ms of audio; None when nothing changed.
    assert partials == [None, "turn", None, "turn on", None]
    assert result == Transcript(text="turn on the lights", audio_seconds=0.5)
    second = await stt.open_stream()
    assert (await second.finish()).text == "thanks"
    assert stt.languages == ["en", None]


async def test_stt_can_fail_and_refuses_misuse() -> None:
    stt = ScriptedSTT([EngineError("decoder crashed", origin="stt")])
    stream = await stt.open_stream()
    with pytest.raises(EngineError, match="decoder crashed"):
        await stream.finish()
    with pytest.raises(RuntimeError, match="closed"):
        await stream.push(b"\x00\x00")
    with pytest.raises(RuntimeError, match="only 1 transcripts"):
        await stt.open_stream()


# ---------------------------------------------------------------------------------------------
# ScriptedVAD
# ---------------------------------------------------------------------------------------------


def test_vad_hears_tone_as_speech_and_zeros_as_silence() -> None:
    vad = ScriptedVAD()
    stream = vad.open_stream()
    assert (vad.sample_rate, stream.window_samples) == (16000, 512)

    speech = stream.process(tone_pcm(32 * 4, sample_rate=16000))  # 4 windows of 32 ms
    silence = stream.process(silence_pcm(32 * 4, sample_rate=16000))

    assert speech == [1.0] * 4
    assert silence == [0.0] * 4


def test_vad_keeps_leftovers_until_a_window_is_complete() -> None:
    stream = ScriptedVAD().open_stream()
    pcm = tone_pcm(64, sample_rate=16000)  # 1024 samples: two windows
    assert stream.process(pcm[:1501]) == [1.0]  # odd byte count: half a sample waits too
    assert stream.process(pcm[1501:]) == [1.0]

    stream.process(pcm[:600])
    stream.reset()
    assert stream.process(pcm[:1000]) == []  # the 600 bytes before reset are gone


def test_vad_threshold_separates_quiet_from_loud() -> None:
    stream = ScriptedVAD(threshold=0.05).open_stream()
    quiet = tone_pcm(32, sample_rate=16000, amplitude=0.02)  # RMS ≈ 0.014
    loud = tone_pcm(32, sample_rate=16000, amplitude=0.2)  # RMS ≈ 0.14
    assert stream.process(quiet + loud) == [0.0, 1.0]
