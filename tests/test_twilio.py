"""Phone calls through Twilio Media Streams against a real server: a stand-in for Twilio
(tests/_twilio.py) posts the signed voice webhook, follows the TwiML to the media WebSocket
and speaks the protocol as documented, with espeak speech on the caller's line. A server-side
app watches the call over a sideband opened with the official `openai` SDK; every event it
sees is validated against the SDK's types."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from twilio.request_validator import RequestValidator

from _controls import engines as scripted_engines
from _espeak import speak
from _realtime import Events
from _twilio import MediaStream, Webhook, connect_stream, media_stream, post_webhook
from conftest import RunningServer, free_port, words_of
from voxgate.audio.g711 import pcm16_to_ulaw
from voxgate.control.policy import Policy
from voxgate.settings import Settings
from voxgate.transports.twilio_auth import mint_media_token

KEY = "sk-twilio-calls"
AUTH_TOKEN = "twilio-auth-token-for-tests"
TRANSCRIBED = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
DISCLOSURE = {"voxgate": "disclosure"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            port=free_port(),
            data_dir=data_dir,
            api_keys=[KEY],
            policy=Policy(record_calls=True),
            twilio={"auth_token": AUTH_TOKEN, "key": KEY, "session": TRANSCRIBED},
        )
        running = RunningServer(settings, None)
        running.start()
        yield running
        running.stop()


def voice_url(server: RunningServer) -> str:
    return f"{server.base_url}/twilio/voice"


def speech(text: str) -> bytes:
    """Spoken words as the phone line carries them: 8 kHz μ-law, after half a second of
    silence."""
    return b"\xff" * 4000 + pcm16_to_ulaw(speak(text, sample_rate=8000))


@contextlib.asynccontextmanager
async def sideband(client: AsyncOpenAI, call_id: str) -> AsyncIterator[tuple[Any, Events]]:
    """Attach to the call's session once it is up (it is admitted after ``start``)."""
    deadline = time.monotonic() + 15
    async with contextlib.AsyncExitStack() as stack:
        while True:
            conn = await stack.enter_async_context(client.realtime.connect(call_id=call_id))
            events = Events(conn)
            first = await events.next()
            if first.type == "session.created":
                break
            assert first.type == "error" and first.error.code == "call_not_found", first
            await stack.aclose()
            assert time.monotonic() < deadline, "the call's session never appeared"
            await asyncio.sleep(0.05)
        yield conn, events


@contextlib.asynccontextmanager
async def phone_call(server: RunningServer) -> AsyncIterator[tuple[MediaStream, Any, Events]]:
    """A call that Twilio connected: its media stream, and a sideband on its session."""
    webhook = Webhook()
    answer = await post_webhook(voice_url(server), AUTH_TOKEN, webhook)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    stream = connect_stream(answer.text)
    assert stream.url == f"ws://127.0.0.1:{server.settings.port}/v1/twilio/media"
    async with (
        media_stream(stream, webhook) as call,
        AsyncOpenAI(base_url=server.base_url, api_key=KEY) as client,
    ):
        await call.begin()
        async with sideband(client, webhook.call_sid) as (conn, events):
            # A phone call opens with the disclosure; the caller talks once it has played
            # (the server says so once Twilio has echoed its last mark).
            await events.until("output_audio_buffer.stopped")
            assert call.audio and call.played == len(call.audio) and not call.unechoed_marks
            yield call, conn, events


def is_reply(event: Any) -> bool:
    """A response.done of an answer (not of the disclosure the call opens with)."""
    return bool(event.type == "response.done" and event.response.metadata != DISCLOSURE)


async def reply_played(side: Events) -> list[Any]:
    """The events up to the end of the next answer's playout."""
    seen = await side.until(is_reply, wait_s=40)
    rid = seen[-1].response.id
    return seen + await side.until(
        lambda e: e.type == "output_audio_buffer.stopped" and e.response_id == rid
    )


async def transcribe(server: RunningServer, ulaw: bytes) -> str:
    """What the server's own speech-to-text hears in μ-law audio."""
    async with (
        AsyncOpenAI(base_url=server.base_url, api_key=KEY) as client,
        client.realtime.connect(model="gpt-realtime") as conn,
    ):
        events = Events(conn)
        await events.expect("session.created")
        audio_in = {"format": {"type": "audio/pcmu"}, "turn_detection": None}
        audio_in["transcription"] = {"model": "whisper-1"}
        await conn.session.update(session={"type": "realtime", "audio": {"input": audio_in}})
        await events.until("session.updated")
        for at in range(0, len(ulaw), 8000):
            chunk = base64.b64encode(ulaw[at : at + 8000]).decode()
            await conn.input_audio_buffer.append(audio=chunk)
        await conn.input_audio_buffer.commit()
        done = await events.until("conversation.item.input_audio_transcription.completed")
        return str(done[-1].transcript)


async def recording(server: RunningServer, created: Any) -> tuple[int, Any, Any]:
    """The call's recording (an admin fetch, once the session has closed it): its rate and
    its two channels."""
    url = f"{server.base_url}/admin/sessions/{created.session.id}/recording"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        async with asyncio.timeout(20):
            while (got := await http.get(url)).status_code == 409:
                assert got.json()["error"]["code"] == "recording_in_progress"
                await asyncio.sleep(0.1)  # the session closes its recording in the background
    assert got.status_code == 200, got.text
    with wave.open(io.BytesIO(got.content)) as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        return wav.getframerate(), frames[:, 0], frames[:, 1]


def loud_frames(samples: Any, rate: int = 8000) -> list[int]:
    """Indices of the 20 ms frames with sound in them."""
    frame = rate // 50
    return [
        i // frame
        for i in range(0, len(samples), frame)
        if np.abs(samples[i : i + frame].astype(np.int32)).max() > 500
    ]


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


@pytest.mark.slow
async def test_a_call_is_answered_in_mulaw_media_with_marks_and_hears_keypresses(
    server: RunningServer,
) -> None:
    async with phone_call(server) as (call, conn, side):
        # The app steers the call from the sideband: a short answer.
        await conn.session.update(session={"type": "realtime", "max_output_tokens": 12})
        await side.until("session.updated")
        opening = bytes(call.audio)
        await call.press("7")
        call.say(speech("one two three four five"))
        seen = await reply_played(side)
        # "Stopped" is Twilio's word, not ours: the last mark was echoed, all of it played.
        last_mark = call.messages("mark")[-1]["mark"]["name"]
        assert call.acks[-1].name == last_mark and call.acks[-1].played
        assert call.played == len(call.audio)
        await call.hang_up()
        await call.wait_for(lambda: call.closed is not None, timeout_s=10)

    [dtmf] = of_type(seen, "input_audio_buffer.dtmf_event_received")
    assert dtmf.event == "7"
    [heard] = of_type(seen, "conversation.item.input_audio_transcription.completed")
    assert {"two", "three", "four"} <= words_of(heard.transcript), heard.transcript
    done = seen[-1 - [e.type for e in reversed(seen)].index("response.done")]
    assert is_reply(done)
    # (Cut short by max_output_tokens, a completed answer as far as the caller can tell.)
    assert done.response.status in ("completed", "incomplete"), done.response
    said = done.response.output[0].content[0].transcript
    # The reply reached the phone as 20 ms μ-law frames, each chunk followed by a mark.
    sent = [m for _, m in call.received]
    assert {m["event"] for m in sent} == {"media", "mark"}
    assert all(m["streamSid"] == call.stream_sid for m in sent)
    assert sent[0]["event"] == "media" and sent[-1]["event"] == "mark"
    media = call.messages("media")
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    names = [m["mark"]["name"] for m in call.messages("mark")]
    assert len(set(names)) == len(names) >= len(media) // 10
    # The caller heard the disclosure first, then the reply's speech: the server's own
    # recogniser hears them in what reached the phone.
    assert {"automated", "assistant"} <= words_of(await transcribe(server, opening))
    words = {w for w in words_of(said) if len(w) > 2}
    assert words, said
    heard_back = words_of(await transcribe(server, bytes(call.audio[len(opening) :])))
    assert len(words & heard_back) >= 0.6 * len(words), (said, heard_back)
    # The call ended with Twilio's stop: the server closed the stream normally.
    assert call.closed is not None and call.closed[0] == 1000
    # Recorded at the phone's 8 kHz: the caller on the left, voxgate on the right, in the
    # order the call went: the disclosure, the caller's words, the reply.
    rate, caller, voxgate = await recording(server, side.all[0])
    assert rate == 8000
    spoke, said = loud_frames(caller), loud_frames(voxgate)
    assert spoke and said
    assert said[0] < spoke[0] and said[-1] > spoke[-1]


@pytest.mark.slow
async def test_speaking_over_a_reply_clears_it_and_truncates_at_the_last_echoed_mark(
    server: RunningServer,
) -> None:
    async with phone_call(server) as (call, _conn, side):
        opening = len(call.audio)  # the disclosure: the reply's audio comes after it
        # The built-in responder's answer to this is long (about 15 s of speech).
        call.say(speech("Tell me everything you know about the weather in Paris."))
        before = await side.until(
            lambda e: e.type == "response.created" and e.response.metadata != DISCLOSURE,
            wait_s=40,
        )
        rid = before[-1].response.id
        before += await side.until("output_audio_buffer.started")
        [item] = [e.item for e in before if e.type == "response.output_item.added"][-1:]
        # Let the caller hear a second and a half of it, then talk over it.
        await call.wait_for(lambda: call.played >= opening + 12000, timeout_s=20)
        call.say(speech("one two three four five"))
        events = await side.until("conversation.item.truncated", wait_s=30)
    seen = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in seen
    [cleared] = of_type(events, "output_audio_buffer.cleared")
    assert cleared.response_id == rid
    stopped = [e.response_id for e in before + events if e.type == "output_audio_buffer.stopped"]
    assert rid not in stopped
    # Twilio was told to drop what it had buffered.
    assert len(call.messages("clear")) == 1 and call.messages("clear")[0]["streamSid"]
    [(cleared_at, played_at_clear)] = call.clears
    # The item is cut where the caller stopped hearing it as far as Twilio told the server:
    # at a mark Twilio had echoed because it played (the last one, unless an echo crossed
    # the clear on the wire), never beyond what had played.
    truncated = events[-1]
    assert truncated.item_id == item.id
    played = [a.position - opening for a in call.acks if a.played and a.at <= cleared_at]
    assert truncated.audio_end_ms * 8 in played[-2:], (truncated, played[-3:])
    assert 1000 <= truncated.audio_end_ms <= (played_at_clear - opening) // 8


@pytest.mark.slow
async def test_the_app_can_hang_up_a_twilio_call_by_its_call_sid(server: RunningServer) -> None:
    async with (
        phone_call(server) as (call, _conn, side),
        AsyncOpenAI(base_url=server.base_url, api_key=KEY) as client,
    ):
        await client.realtime.calls.hangup(call.webhook.call_sid)
        await call.wait_for(lambda: call.closed is not None, timeout_s=10)
        assert call.closed == (1000, "session ended")
        with pytest.raises(websockets.ConnectionClosed):  # the sideband ends with the session
            await side.until("never", wait_s=5)


async def test_a_webhook_without_twilios_signature_is_refused(server: RunningServer) -> None:
    webhook = Webhook()
    for signature in (None, "bm90IGEgc2lnbmF0dXJl", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="):
        refused = await post_webhook(voice_url(server), AUTH_TOKEN, webhook, signature)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "invalid_twilio_signature"
    # Signed for another URL, or with another account's token.
    other = voice_url(server).replace("/v1/", "/v2/")
    params = webhook.params()
    for token, url in ((AUTH_TOKEN, other), ("someone-elses", voice_url(server))):
        signature = RequestValidator(token).compute_signature(url, params)
        refused = await post_webhook(voice_url(server), AUTH_TOKEN, webhook, signature)
        assert refused.status_code == 403


async def test_behind_a_proxy_the_signed_url_is_the_public_one(server: RunningServer) -> None:
    webhook = Webhook()
    public = "https://voice.example.com/v1/twilio/voice"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(public, webhook.params())
    headers = {
        "X-Twilio-Signature": signature,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "voice.example.com",
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(voice_url(server), data=webhook.params(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert connect_stream(answer.text).url == "wss://voice.example.com/v1/twilio/media"


async def open_stream(server: RunningServer, start: dict[str, Any]) -> tuple[int, str]:
    """Speak Twilio's first messages on the media socket; how the server closed it."""
    url = f"ws://127.0.0.1:{server.settings.port}/v1/twilio/media"
    async with websockets.connect(url) as ws:
        message = {"event": "start", "sequenceNumber": "1", "start": start}
        with contextlib.suppress(websockets.ConnectionClosed):  # (it may close at once)
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            await ws.send(json.dumps({**message, "streamSid": start["streamSid"]}))
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


def start_message(call_sid: str, **params: str) -> dict[str, Any]:
    return {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": params,
    }


async def test_a_media_stream_needs_the_token_from_a_signed_webhook(
    server: RunningServer,
) -> None:
    refused = (1008, "invalid_media_token")
    assert await open_stream(server, start_message("CA1")) == refused
    assert await open_stream(server, start_message("CA1", voxgate_token="1.abc")) == refused
    # A token for another call, or made with another auth token.
    expires = int(time.time()) + 60
    other_call = mint_media_token(AUTH_TOKEN, "CA2", expires)
    assert await open_stream(server, start_message("CA1", voxgate_token=other_call)) == refused
    forged = mint_media_token("guessed", "CA1", expires)
    assert await open_stream(server, start_message("CA1", voxgate_token=forged)) == refused
    # The webhook's own token works once.
    webhook = Webhook()
    answer = await post_webhook(voice_url(server), AUTH_TOKEN, webhook)
    token = connect_stream(answer.text).parameters["voxgate_token"]
    start = start_message(webhook.call_sid, voxgate_token=token)
    url = f"ws://127.0.0.1:{server.settings.port}/v1/twilio/media"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start}))
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2", "stop": {}}))
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
        assert ws.close_code == 1000
    assert await open_stream(server, start) == refused
    # Audio Twilio would never send: refused before any session starts.
    wideband = start_message(webhook.call_sid, voxgate_token=token)
    wideband["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    assert await open_stream(server, wideband) == (1008, "bad_media_stream")


async def test_without_an_auth_token_twilio_calls_are_off(start_server: Any) -> None:
    plain = start_server(scripted_engines())
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{plain.base_url}/twilio/voice", data={"CallSid": "CA1"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "twilio_not_configured"
    assert await open_stream(plain, start_message("CA1")) == (1008, "twilio_not_configured")


@pytest.mark.slow
async def test_the_keys_policy_governs_twilio_calls(start_server: Any) -> None:
    # One call at a time for this key: a second caller is turned away while the first talks.
    limited = start_server(
        scripted_engines(),
        api_keys=[KEY],
        policy=Policy(max_concurrent_sessions=1),
        twilio={"auth_token": AUTH_TOKEN, "key": KEY},
    )
    async with phone_call(limited) as (first, _conn, _side):
        webhook = Webhook()
        answer = await post_webhook(voice_url(limited), AUTH_TOKEN, webhook)
        token = connect_stream(answer.text).parameters["voxgate_token"]
        start = start_message(webhook.call_sid, voxgate_token=token)
        assert await open_stream(limited, start) == (1013, "concurrent_sessions_exceeded")
        assert first.closed is None


async def test_a_wrong_twilio_key_is_refused_at_the_webhook(start_server: Any) -> None:
    misconfigured = start_server(
        scripted_engines(), api_keys=[KEY], twilio={"auth_token": AUTH_TOKEN, "key": "sk-not"}
    )
    answer = await post_webhook(voice_url(misconfigured), AUTH_TOKEN, Webhook())
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
