"""Token log probabilities of input transcripts (``include:
["item.input_audio_transcription.logprobs"]``): given by Whisper, refused where the recogniser
has none."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator

import pytest

from _espeak import speak
from _helpers_protocol import validated
from conftest import heard
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.local.whisper import WhisperEngine
from voxgate.engines.testing import ScriptedSTT, ScriptedTTS
from voxgate.protocol.connection import RealtimeConnection
from voxgate.server.state import AppState
from voxgate.session.engines import EngineSet
from voxgate.session.manager import SessionManager
from voxgate.session.testing import running_session
from voxgate.settings import Settings

LOGPROBS = "item.input_audio_transcription.logprobs"


@pytest.fixture
async def whisper() -> AsyncIterator[WhisperEngine]:
    engine = await WhisperEngine.load(workers=1)
    yield engine
    await engine.aclose()


async def test_completed_carries_whispers_logprobs_when_asked(whisper: WhisperEngine) -> None:
    engines = EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS(), stt=whisper)
    connection = RealtimeConnection(transcription_logprobs=True)
    async with running_session(engines, connection=connection, validate=validated) as run:
        t = run.transport
        audio = {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}}
        session = {"type": "realtime", "audio": audio, "include": [LOGPROBS]}
        t.send_event({"type": "session.update", "session": session})
        pcm = speak("Please open the kitchen window.", sample_rate=24000)
        t.send_event({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        t.send_event({"type": "input_audio_buffer.commit"})
        events = await t.events_until("conversation.item.input_audio_transcription.completed")
    completed = events[-1]
    assert heard(completed["transcript"], {"open", "kitchen", "window"}), completed
    logprobs = completed["logprobs"]
    assert "".join(p["token"] for p in logprobs).strip() == completed["transcript"]
    assert all(p["logprob"] <= 0 and p["bytes"] == list(p["token"].encode()) for p in logprobs)
    # Clear speech: Whisper is sure of most words.
    assert sum(math.exp(p["logprob"]) for p in logprobs) / len(logprobs) > 0.5


async def test_without_the_include_there_are_none(whisper: WhisperEngine) -> None:
    engines = EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS(), stt=whisper)
    connection = RealtimeConnection(transcription_logprobs=True)
    async with running_session(engines, connection=connection, validate=validated) as run:
        t = run.transport
        audio = {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}}
        t.send_event({"type": "session.update", "session": {"type": "realtime", "audio": audio}})
        pcm = speak("Good morning.", sample_rate=24000)
        t.send_event({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        t.send_event({"type": "input_audio_buffer.commit"})
        events = await t.events_until("conversation.item.input_audio_transcription.completed")
    assert events[-1]["logprobs"] is None


def test_the_server_accepts_the_include_only_with_a_recogniser_that_gives_them() -> None:
    def state(stt: object) -> AppState:
        engines = EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS(), stt=stt)  # type: ignore[arg-type]
        # No controls: the property never touches them.
        return AppState(Settings(), engines, SessionManager(max_sessions=1), None)  # type: ignore[arg-type]

    assert state(WhisperEngine(object())).transcription_logprobs
    assert not state(ScriptedSTT([])).transcription_logprobs
    refused = RealtimeConnection(transcription_logprobs=False)
    update = {"type": "session.update", "session": {"type": "realtime", "include": [LOGPROBS]}}
    [error] = refused.receive(json.dumps(update))
    assert error.type == "error" and error.error["param"] == "session.include"
    accepted = RealtimeConnection(transcription_logprobs=True)
    [updated] = accepted.receive(json.dumps(update))
    assert updated.type == "session.updated" and updated.session["include"] == [LOGPROBS]
