"""Spoken turns end to end, through the official `openai` SDK, in real time.

The server runs the embedded pipeline (Silero VAD, Whisper, built-in responder or an
OpenAI-compatible LLM endpoint, espeak-ng). The test is the user: a microphone streams
speech made by the embedded TTS, then silence, in 20 ms chunks paced by the clock, for as
long as the conversation lasts. Every server event is validated against the SDK's types.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from _realtime import Events, rms
from conftest import RunningServer, SlowChatServer, free_port, heard, speech_pcm24k
from voxgate.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voxgate.audio.resample import resample
from voxgate.settings import Settings

MODEL = "gpt-realtime"
CHUNK_MS = 20
CHUNK_BYTES = 24 * 2 * CHUNK_MS
# Sentences spoken in the tests, and the key words of each that the transcript must hold.
WEATHER = ("what is the weather like in Paris tomorrow", {"weather", "paris", "tomorrow"})
NUMBERS = ("one two three four five", {"two", "three", "four"})



@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(Settings(port=free_port(), ), None)
    running.start()
    yield running
    running.stop()


class Microphone:
    """Streams audio to the server in real time; silence whenever nothing is queued, like a
    live microphone. ``speech_end`` is when the last queued speech sample was sent."""

    def __init__(self, conn: AsyncRealtimeConnection, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.conn = conn
        self.chunk_bytes = chunk_bytes
        # What "silence" is in the input format: zero in PCM16, 0xFF in μ-law.
        self.silence = bytes(chunk_bytes)
        self.queue = bytearray()
        self.speech_end: float | None = None
        self._speaking = False

    def say(self, pcm: bytes) -> None:
        self.queue += pcm
        self._speaking = True

    async def run(self) -> None:
        start = time.monotonic()
        sent = 0
        while True:
            chunk = bytes(self.queue[: self.chunk_bytes]) or self.silence
            del self.queue[: self.chunk_bytes]
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            if self._speaking and not self.queue:
                self._speaking = False
                self.speech_end = time.monotonic()
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - time.monotonic()))


@contextlib.asynccontextmanager
async def conversation(
    server: RunningServer, *, chunk_bytes: int = CHUNK_BYTES, **session: Any
) -> AsyncIterator[tuple[AsyncRealtimeConnection, Events, Microphone]]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    async with client.realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(session={"type": "realtime", "model": MODEL, **session})
        await events.expect("session.updated")
        mic = Microphone(conn, chunk_bytes)
        if chunk_bytes != CHUNK_BYTES:
            mic.silence = pcm16_to_ulaw(bytes(2 * chunk_bytes))
        task = asyncio.create_task(mic.run())
        try:
            yield conn, events, mic
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


def reply_audio(events: list[Any]) -> bytes:
    return b"".join(
        base64.b64decode(e.delta) for e in of_type(events, "response.output_audio.delta")
    )


TRANSCRIBED = {"input": {"transcription": {"model": "whisper-1"}}}


async def test_spoken_turn_with_server_vad(server: RunningServer) -> None:
    text, key_words = NUMBERS
    async with conversation(server, audio=TRANSCRIBED) as (_conn, events, mic):
        mic.say(bytes(CHUNK_BYTES * 10) + speech_pcm24k(text))
        seen = await events.until("response.done", wait_s=30)
    started = of_type(seen, "input_audio_buffer.speech_started")
    stopped = of_type(seen, "input_audio_buffer.speech_stopped")
    committed = of_type(seen, "input_audio_buffer.committed")
    assert len(started) == len(stopped) == len(committed) == 1, [e.type for e in seen]
    assert started[0].item_id == stopped[0].item_id == committed[0].item_id
    # The speech began after 200 ms of silence; the turn starts 300 ms before detection.
    assert 0 <= started[0].audio_start_ms <= 300
    assert stopped[0].audio_end_ms > started[0].audio_start_ms + 1000
    [completed] = of_type(seen, "conversation.item.input_audio_transcription.completed")
    assert completed.item_id == committed[0].item_id
    assert heard(completed.transcript, key_words), completed.transcript
    assert completed.usage.type == "duration" and completed.usage.seconds > 1
    done = seen[-1].response
    assert done.status == "completed"
    # The built-in responder repeats what it heard, out loud.
    assert completed.transcript in done.output[0].content[0].transcript
    audio = reply_audio(seen)
    assert len(audio) > 24000 * 2 and rms(audio) > 500  # over a second of real sound
    assert done.usage.input_token_details.audio_tokens > 0


async def test_speaking_over_a_reply_interrupts_it(server: RunningServer) -> None:
    async with conversation(server, audio=TRANSCRIBED) as (conn, events, mic):
        mic.say(bytes(CHUNK_BYTES * 10) + speech_pcm24k(NUMBERS[0]))
        first = await events.until("response.output_audio.delta", wait_s=30)
        rid = of_type(first, "response.created")[0].response.id
        item_id = of_type(first, "response.output_item.added")[0].item.id
        playback_started = time.monotonic()
        # The built-in reply runs about 15 s; speak over it after 1.5 s of it.
        await asyncio.sleep(1.5)
        mic.say(speech_pcm24k(NUMBERS[0]))
        cut = await events.until("input_audio_buffer.speech_started", wait_s=15)
        played_ms = int((time.monotonic() - playback_started) * 1000)
        # Generation is not paced to playout: the reply may be done generating (its
        # response.done "completed") before the user speaks over it; if not, it is cancelled.
        if not [e for e in cut if e.type == "response.done" and e.response.id == rid]:
            cut += await events.until(
                lambda e: e.type == "response.done" and e.response.id == rid, wait_s=15
            )
        [done] = [e.response for e in cut if e.type == "response.done" and e.response.id == rid]
        if done.status != "completed":
            assert done.status == "cancelled"
            assert done.status_details.reason == "turn_detected"
        # What the server produced is longer than what this client played: truncate it.
        produced_ms = len(reply_audio(first + cut)) / 48
        assert produced_ms > played_ms
        await conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=played_ms
        )
        rest = await events.until("response.done", wait_s=30)
    [truncated] = of_type(rest, "conversation.item.truncated")
    assert truncated.item_id == item_id and truncated.audio_end_ms == played_ms
    [completed] = of_type(
        first + cut + rest, "conversation.item.input_audio_transcription.completed"
    )[-1:]
    assert heard(completed.transcript, NUMBERS[1]), completed.transcript
    assert rest[-1].response.status == "completed"
    assert completed.transcript in rest[-1].response.output[0].content[0].transcript


async def test_spoken_turn_with_semantic_vad(server: RunningServer) -> None:
    semantic = {"type": "semantic_vad", "eagerness": "high"}
    audio = {**TRANSCRIBED["input"], "turn_detection": semantic}
    async with conversation(server, audio={"input": audio}) as (_conn, events, mic):
        clip = bytes(CHUNK_BYTES * 10) + speech_pcm24k(WEATHER[0])
        mic.say(clip)
        seen = await events.until("input_audio_buffer.speech_stopped", wait_s=30)
        seen += await events.until("response.done", wait_s=30)
    # At high eagerness the turn ends within the 650 ms it waits for words it has not
    # understood (200 ms once the words decoded at the pause say the sentence is complete),
    # far short of its 2 s longest wait. Whether the words arrive before 650 ms depends on
    # how fast this machine decodes them: bench/latency.py measures that, not this test.
    # Counted in audio time (espeak's own trailing silence is part of the speech clip), plus
    # two 32 ms detector windows.
    [stopped] = of_type(seen, "input_audio_buffer.speech_stopped")
    assert stopped.audio_end_ms - len(clip) / 48 < 650 + 64
    [completed] = of_type(seen, "conversation.item.input_audio_transcription.completed")
    assert heard(completed.transcript, WEATHER[1]), completed.transcript
    assert seen[-1].response.status == "completed"


async def test_g711_in_and_out(server: RunningServer) -> None:
    ulaw = {"type": "audio/pcmu"}
    audio = {"input": {"format": ulaw, **TRANSCRIBED["input"]}, "output": {"format": ulaw}}
    async with conversation(server, chunk_bytes=160, audio=audio) as (_conn, events, mic):
        speech = resample(speech_pcm24k(NUMBERS[0]), 24000, 8000)
        mic.say(pcm16_to_ulaw(bytes(3200) + speech))
        seen = await events.until("response.done", wait_s=30)
    [started] = of_type(seen, "input_audio_buffer.speech_started")
    [stopped] = of_type(seen, "input_audio_buffer.speech_stopped")
    assert 0 <= started.audio_start_ms <= 300
    assert stopped.audio_end_ms - started.audio_start_ms > 1500
    [completed] = of_type(seen, "conversation.item.input_audio_transcription.completed")
    # Telephone-band audio: half the band Whisper was trained on, still heard.
    assert heard(completed.transcript, NUMBERS[1]), completed.transcript
    assert completed.usage.seconds > 1.5
    reply = reply_audio(seen)  # μ-law, 8 kHz: one byte per sample
    assert len(reply) > 8000
    assert rms(ulaw_to_pcm16(reply)) > 500
    assert seen[-1].response.status == "completed"


async def test_an_unreachable_language_model_is_a_clear_error_and_the_session_survives(
    start_server: Any,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    srv = start_server(llm_base_url=dead, llm_model="m", llm_timeout_s=2)
    async with conversation(srv) as (conn, events, mic):
        mic.say(bytes(CHUNK_BYTES * 10) + speech_pcm24k(NUMBERS[0]))
        seen = await events.until("response.done", wait_s=30)
        [error] = of_type(seen, "error")
        assert "VOXGATE_LLM_BASE_URL" in error.error.message or dead in error.error.message
        assert seen[-1].response.status == "failed"
        # Still open: a text turn gets a (failed, again) response, not a closed socket.
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await conn.response.create()
        again = await events.until("response.done", wait_s=30)
        assert again[-1].response.status == "failed"


async def test_tool_calls_from_the_language_model_reach_the_client(start_server: Any) -> None:
    arguments = json.dumps({"city": "Paris"})
    call = {"index": 0, "id": "call_42", "type": "function", "function": {"name": "get_weather"}}
    llm = SlowChatServer(
        delay_s=0.01,
        script=[
            (
                {
                    "role": "assistant",
                    "tool_calls": [{**call, "function": {**call["function"], "arguments": ""}}],
                },
                None,
            ),
            ({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:7]}}]}, None),
            ({"tool_calls": [{"index": 0, "function": {"arguments": arguments[7:]}}]}, None),
            ({}, "tool_calls"),
        ],
    )
    try:
        srv = start_server(llm_base_url=llm.url, llm_model="m")
        tool = {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
        async with conversation(srv, tools=[tool], audio=TRANSCRIBED) as (_c, events, mic):
            mic.say(bytes(CHUNK_BYTES * 10) + speech_pcm24k(NUMBERS[0]))
            seen = await events.until("response.done", wait_s=30)
    finally:
        llm.stop()
    [args_done] = of_type(seen, "response.function_call_arguments.done")
    assert args_done.call_id == "call_42" and json.loads(args_done.arguments) == {"city": "Paris"}
    done = seen[-1].response
    assert done.status == "completed"
    assert done.output[0].type == "function_call" and done.output[0].name == "get_weather"
    # The model was given the tool and what the user said.
    [request] = llm.requests
    assert request["tools"][0]["function"]["name"] == "get_weather"
    assert heard(request["messages"][-1]["content"], NUMBERS[1])
