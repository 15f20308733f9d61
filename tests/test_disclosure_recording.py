"""Policy `disclosure` and `record_calls` on a real server, heard by a WebRTC peer (aiortc) the
way a caller hears a phone call: the disclosure plays before the first reply (the test
transcribes what the peer heard with the embedded Whisper), and the recording an admin fetches
holds the caller's words on the left channel and voxgate's voice on the right."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import RunningServer, heard, speech_pcm24k, validated
from voxgate.audio.resample import resample
from voxgate.call.webrtc import AUDIBLE_LEVEL, WebRTCPeer, post_offer
from voxgate.control.policy import Policy
from voxgate.engines.local.whisper import WhisperEngine

KEY = "sk-test"
DISCLOSURE = "This call is recorded and you are talking to a computer."
DISCLOSURE_KEYS = {"call", "recorded", "talking", "computer"}
SPOKEN = "one two three four five"
SPOKEN_KEYS = {"two", "three", "four"}


@pytest.fixture
async def whisper() -> AsyncIterator[WhisperEngine]:
    engine = await WhisperEngine.load(workers=1)
    yield engine
    await engine.aclose()


async def transcribe(engine: WhisperEngine, pcm: bytes, rate: int) -> str:
    stream = await engine.open_stream()
    await stream.push(resample(pcm, rate, 16000))
    return (await stream.finish()).text


def channels(wav_bytes: bytes) -> tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        rate = wav.getframerate()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    return rate, frames[:, 0].copy(), frames[:, 1].copy()


@pytest.mark.slow
async def test_the_disclosure_is_heard_before_the_first_reply_and_the_call_is_recorded(
    start_server: Any, tmp_path: Path, whisper: WhisperEngine
) -> None:
    policy = Policy(disclosure=DISCLOSURE, record_calls=True)
    server: RunningServer = start_server(policy=policy, data_dir=tmp_path)
    transcription = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    async with httpx.AsyncClient() as http:
        async with WebRTCPeer() as peer:
            answer = await post_offer(http, server.base_url, await peer.create_offer(), api_key=KEY)
            await peer.accept_answer(answer.sdp)
            await peer.events.wait_open()
            # An application greets the caller as soon as the call connects.
            peer.send({"type": "session.update", "session": {"type": "realtime", **transcription}})
            peer.send({"type": "response.create", "response": {"instructions": "Say hello."}})
            stopped: list[str] = []

            def second_stop(event: Any) -> bool:
                if event.type == "output_audio_buffer.stopped":
                    stopped.append(event.data["response_id"])
                return len(stopped) == 2

            first = await peer.events.until(second_stop, 30)
            for event in first:
                validated(event.raw)
            assert first[0].type == "session.created"
            assert not [e for e in first if e.type == "error"]
            disclosure, greeting = [e for e in first if e.type == "response.created"]
            assert disclosure.data["response"]["metadata"] == {"voxgate": "disclosure"}
            [said, _] = [e for e in first if e.type == "response.output_audio_transcript.done"]
            assert said.data["transcript"] == DISCLOSURE
            starts = [e for e in first if e.type == "output_audio_buffer.started"]
            ends = [e for e in first if e.type == "output_audio_buffer.stopped"]
            assert [e.data["response_id"] for e in starts] == [
                disclosure.data["response"]["id"],
                greeting.data["response"]["id"],
            ]
            # The client's events waited for the disclosure; its greeting played after it,
            # and the disclosure was heard whole (never cleared).
            kinds = [e.type for e in first]
            assert kinds.index("session.updated") > kinds.index("response.done")
            # (started means queued behind what plays; stopped means heard to the end.)
            assert [e.data["response_id"] for e in ends] == [
                disclosure.data["response"]["id"],
                greeting.data["response"]["id"],
            ]
            assert peer.audio.audible_seconds(ends[0].at, ends[1].at + 0.3) > 0.3
            assert "output_audio_buffer.cleared" not in kinds
            heard_disclosure = peer.audio.pcm(starts[0].at, ends[0].at + 0.3, rate=24000)
            text = await transcribe(whisper, heard_disclosure, 24000)
            assert heard(text, DISCLOSURE_KEYS), text

            peer.say(bytes(24000) + speech_pcm24k(SPOKEN))
            rest = await peer.events.until("output_audio_buffer.stopped", 60)
            for event in rest:
                validated(event.raw)
            [user] = [e for e in rest if e.type.endswith("input_audio_transcription.completed")]
            assert heard(user.data["transcript"], SPOKEN_KEYS), user.data["transcript"]
        # The peer hung up: the session ends and its recording is complete.
        session_id = first[0].data["session"]["id"]
        recording = await fetch_recording(http, server, session_id)

    rate, caller, voxgate = channels(recording)
    assert rate == 24000
    # Left: the caller's words, and nothing of voxgate's voice (no echo, no mix).
    assert heard(await transcribe(whisper, caller.tobytes(), rate), SPOKEN_KEYS)
    # Right: the disclosure first, then the reply.
    right_text = await transcribe(whisper, voxgate[: 6 * rate].tobytes(), rate)
    assert heard(right_text, DISCLOSURE_KEYS), right_text
    # Time-aligned as the call happened: the caller spoke after the greeting ended, and the
    # reply came after the caller's words.
    spoke = loud_frames(caller, rate)
    said = loud_frames(voxgate, rate)
    c0, c1 = spoke[0], spoke[-1]
    before, after = [f for f in said if f < c0], [f for f in said if f > c1]
    assert before and after, (spoke[:3], said[:3])
    assert before[-1] < c0 and after[0] > c1
    assert (after[-1] - after[0]) * 0.02 > 0.5  # a spoken reply, not a click


def loud_frames(samples: np.ndarray[Any, Any], rate: int) -> list[int]:
    """Indices of the 20 ms frames with sound in them."""
    frame = rate // 50
    return [
        i // frame
        for i in range(0, len(samples), frame)
        if np.abs(samples[i : i + frame].astype(np.int32)).max() > AUDIBLE_LEVEL
    ]


async def fetch_recording(http: httpx.AsyncClient, server: RunningServer, session_id: str) -> bytes:
    """The session's recording, once the session has ended: the server closes it in the
    background after the hang-up, and until then answers 409 recording_in_progress."""
    url = f"{server.base_url}/admin/sessions/{session_id}/recording"
    headers = {"Authorization": f"Bearer {KEY}"}
    async with asyncio.timeout(20):
        while (got := await http.get(url, headers=headers)).status_code == 409:
            assert got.json()["error"]["code"] == "recording_in_progress"
            await asyncio.sleep(0.1)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "audio/wav"
    return got.content
