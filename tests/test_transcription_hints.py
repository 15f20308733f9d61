"""The client's transcription ``language`` and ``prompt`` reach the recogniser, for detected
turns and for committed audio alike."""

from __future__ import annotations

import base64

from _espeak import speak
from _helpers_protocol import validated
from voxgate.engines.local.whisper import WhisperEngine
from voxgate.engines.testing import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    silence_pcm,
    tone_pcm,
)
from voxgate.session.engines import EngineSet
from voxgate.session.testing import MemoryTransport, running_session

RATE = 24000
HINTS = {"model": "whisper-1", "language": "de", "prompt": "Voxgate, Kubernetes, Grüezi"}


def append(transport: MemoryTransport, audio: bytes) -> None:
    for i in range(0, len(audio), 960):
        piece = base64.b64encode(audio[i : i + 960]).decode()
        transport.send_event({"type": "input_audio_buffer.append", "audio": piece})


async def test_detected_and_committed_turns_carry_the_hints() -> None:
    stt = ScriptedSTT(["guten tag", "noch einmal"])
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=stt, vad=ScriptedVAD())
    async with running_session(engines, validate=validated) as run:
        transport = run.transport
        await transport.next_event()
        transport.send_event(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": HINTS}},
                },
            }
        )
        await transport.events_until("session.updated")
        speech = tone_pcm(600, sample_rate=RATE)
        append(
            transport,
            silence_pcm(200, sample_rate=RATE) + speech + silence_pcm(800, sample_rate=RATE),
        )
        await transport.events_until("conversation.item.input_audio_transcription.completed")
        # Now the client commits by hand.
        transport.send_event(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
        )
        await transport.events_until("session.updated")
        append(transport, speech)
        transport.send_event({"type": "input_audio_buffer.commit"})
        done = await transport.events_until("conversation.item.input_audio_transcription.completed")
        assert done[-1]["transcript"] == "noch einmal"
    assert stt.languages == ["de", "de"]
    assert stt.prompts == [HINTS["prompt"]] * 2


async def test_whisper_reads_the_prompt_as_what_came_before() -> None:
    # The prompt reaches the real decoder: a prompt in capitals makes Whisper keep the style.
    whisper = await WhisperEngine.load(workers=1)
    try:
        stream = await whisper.open_stream(
            language="en", prompt="HELLO THERE. HOW ARE YOU TODAY, MY FRIEND?"
        )
        await stream.push(speak("hello there my friend"))
        text = (await stream.finish()).text
        assert text.isupper(), text
    finally:
        await whisper.aclose()
