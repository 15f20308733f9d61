"""WebRTC calls against a real server: an aiortc client peer (as a browser would be) on
loopback, SDP over HTTP, events on the ``oai-events`` data channel, reply audio on the track."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

import conftest
from conftest import RunningServer, free_port, speech_pcm24k, validated
from voxgate.call.webrtc import AUDIBLE_LEVEL, CallAnswer, WebRTCPeer, hang_up, post_offer
from voxgate.settings import Settings
from voxgate.transports.webrtc import PlayoutTrack

KEY = "sk-test"
SPOKEN = "one two three four five"
SPOKEN_KEYS = {"two", "three", "four"}
TRANSCRIBED = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(Settings(port=free_port()), None)
    running.start()
    yield running
    running.stop()


class Call:
    def __init__(self, peer: WebRTCPeer, answer: CallAnswer, http: httpx.AsyncClient) -> None:
        self.peer = peer
        self.id = answer.call_id
        self.http = http

    def send(self, **event: Any) -> None:
        self.peer.send(event)

    async def until(self, kind: str, timeout_s: float = 30.0) -> list[Any]:
        return await self.peer.events.until(kind, timeout_s)


@pytest.fixture
async def call(server: RunningServer) -> AsyncIterator[Call]:
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        answer = await post_offer(http, server.base_url, await peer.create_offer(), api_key=KEY)
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        yield Call(peer, answer, http)


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def say_text(call: Call, text: str, **response: Any) -> None:
    content = [{"type": "input_text", "text": text}]
    item = {"type": "message", "role": "user", "content": content}
    call.send(type="conversation.item.create", item=item)
    call.send(type="response.create", response=response)


async def item_audio_s(call: Call, item_id: str) -> tuple[float, float]:
    """The item's audio: its length, and how much of it has sound (20 ms frames, judged as
    the peer judges what it receives; a voice pauses between phrases)."""
    call.send(type="conversation.item.retrieve", item_id=item_id)
    [retrieved] = list(await call.until("conversation.item.retrieved"))[-1:]
    pcm = np.frombuffer(base64.b64decode(retrieved.data["item"]["content"][0]["audio"]), "<i2")
    frames = [pcm[i : i + 480] for i in range(0, len(pcm), 480)]
    audible = sum(len(f) for f in frames if np.abs(f.astype(np.int32)).max() > AUDIBLE_LEVEL)
    return len(pcm) / 24000, audible / 24000


async def test_a_reply_plays_on_the_track_in_real_time_with_its_events_on_the_channel(
    call: Call,
) -> None:
    first = await call.peer.events.next()
    assert first.type == "session.created"
    assert first.data["session"]["type"] == "realtime"
    say_text(call, "Hello there.", max_output_tokens=8)
    events = await call.until("output_audio_buffer.stopped")
    for event in [first, *events]:
        validated(event.raw)
    seen = types(events)
    # Audio rides the track: no audio deltas on the channel; the playout events bracket it.
    assert "response.output_audio.delta" not in seen
    assert "response.output_audio_transcript.delta" in seen
    assert seen.index("response.content_part.added") < seen.index("output_audio_buffer.started")
    assert seen.index("output_audio_buffer.started") < seen.index("response.done")
    assert seen[-1] == "output_audio_buffer.stopped"
    done = events[seen.index("response.done")].data["response"]
    started = events[seen.index("output_audio_buffer.started")]
    stopped = events[-1]
    assert started.data["response_id"] == stopped.data["response_id"] == done["id"]

    length_s, sound_s = await item_audio_s(call, done["output"][0]["id"])
    assert length_s > 0.5
    # The user heard all of it, and it took as long to arrive as it lasts: played in real
    # time, not pushed out as fast as it was made.
    heard_s = call.peer.audio.audible_seconds(started.at, stopped.at + 0.5)
    assert heard_s >= 0.8 * sound_s, (heard_s, sound_s)
    # (Loose bounds: a busy test machine delays events; gaps are measured in bench/.)
    assert stopped.at - started.at >= 0.7 * length_s


async def test_a_session_in_g711_still_plays_and_hears_on_the_track(call: Call) -> None:
    # The formats describe JSON audio; the track converts to and from them as it streams.
    ulaw = {"format": {"type": "audio/pcmu"}}
    audio = {"input": {**ulaw, "transcription": {"model": "whisper-1"}}, "output": ulaw}
    session = {"type": "realtime", "audio": audio, "max_output_tokens": 12}
    call.send(type="session.update", session=session)
    await call.until("session.updated")
    call.peer.say(bytes(24000) + speech_pcm24k(SPOKEN))
    events = await call.until("output_audio_buffer.stopped", timeout_s=40)
    [heard] = [e for e in events if e.type.endswith("input_audio_transcription.completed")]
    assert conftest.heard(heard.data["transcript"], SPOKEN_KEYS), heard.data["transcript"]
    started = next(e for e in events if e.type == "output_audio_buffer.started")
    assert call.peer.audio.audible_seconds(started.at, events[-1].at + 0.5) > 1.0


async def test_speaking_over_a_reply_stops_it_and_truncates_it_where_the_user_stopped_hearing(
    call: Call,
) -> None:
    call.send(type="session.update", session={"type": "realtime", **TRANSCRIBED})
    await call.until("session.updated")
    call.peer.say(bytes(24000) + speech_pcm24k(SPOKEN))
    before = await call.until("output_audio_buffer.started")
    rid = before[-1].data["response_id"]
    [item] = [e.data["item"] for e in before if e.type == "response.output_item.added"]
    await call.peer.audio.wait_audible(after=before[-1].at, timeout_s=10)
    await asyncio.sleep(1.5)  # let the user hear some of the reply
    call.peer.say(speech_pcm24k(SPOKEN))
    events = await call.until("conversation.item.truncated")
    for event in events:
        validated(event.raw)
    seen = types(events)
    assert "input_audio_buffer.speech_started" in seen
    # Generation is not paced to playout: the reply may have finished generating (its
    # response.done already sent, "completed") while it still plays; if not, the barge-in
    # cancels it.
    done = [e.data["response"] for e in before + events if e.type == "response.done"]
    assert done and done[0]["id"] == rid
    if done[0]["status"] != "completed":
        assert done[0]["status"] == "cancelled"
        assert done[0]["status_details"]["reason"] == "turn_detected"
    assert "output_audio_buffer.stopped" not in types(before + events)
    cleared = events[seen.index("output_audio_buffer.cleared")]
    assert cleared.data["response_id"] == rid
    truncated = events[-1].data
    assert truncated["item_id"] == item["id"]
    # Truncated at what was played: at least the sound that reached the peer before the
    # barge-in, at most the time it played for (a voice pauses between phrases).
    heard_ms = 1000 * call.peer.audio.audible_seconds(before[-1].at, cleared.at)
    played_ms = 1000 * (cleared.at - before[-1].at)
    assert truncated["audio_end_ms"] >= 1000, truncated
    assert heard_ms - 200 <= truncated["audio_end_ms"] <= played_ms + 200, (
        truncated,
        heard_ms,
        played_ms,
    )
    # And the sound stops (allowing for frames in flight on a busy machine).
    await asyncio.sleep(1.5)
    assert call.peer.audio.audible_seconds(cleared.at + 1.0, cleared.at + 1.5) == 0
    # The new turn is answered.
    later = await call.until("response.done", timeout_s=30)
    assert later[-1].data["response"]["status"] in ("completed", "cancelled")


@pytest.mark.slow
async def test_a_long_reply_is_done_generating_long_before_it_has_played(call: Call) -> None:
    # The built-in responder's answer to this is long (about 15 s of speech).
    say_text(call, "Tell me everything you know about the weather in Paris.")
    events = await call.until("response.done", timeout_s=60)
    done = events[-1]
    assert done.data["response"]["status"] == "completed"
    seen = types(events)
    assert "output_audio_buffer.started" in seen and "output_audio_buffer.stopped" not in seen
    started = events[seen.index("output_audio_buffer.started")]
    later = await call.until("output_audio_buffer.stopped", timeout_s=120)
    stopped = later[-1]
    assert stopped.data["response_id"] == done.data["response"]["id"]
    # Its length from the usage (assistant audio counts 20 tokens a second): the item itself
    # is too large for the data channel.
    usage = done.data["response"]["usage"]["output_token_details"]
    length_s = usage["audio_tokens"] / 20
    assert length_s > 6
    # Most of the reply was still to be heard when response.done came, and all of it was
    # heard, in real time, before output_audio_buffer.stopped (a voice pauses between
    # phrases: not every 20 ms has sound).
    after_done_s = call.peer.audio.audible_seconds(done.at, stopped.at + 0.5)
    assert after_done_s >= 0.4 * length_s, (after_done_s, length_s)
    assert call.peer.audio.audible_seconds(started.at, stopped.at + 0.5) >= 0.6 * length_s
    assert stopped.at - started.at >= 0.7 * length_s


async def test_the_client_can_cut_playback_short(call: Call) -> None:
    say_text(call, "Tell me everything.")
    events = await call.until("output_audio_buffer.started")
    await call.peer.audio.wait_audible(after=events[-1].at, timeout_s=10)
    await asyncio.sleep(0.5)
    call.send(type="response.cancel")
    call.send(type="output_audio_buffer.clear")
    after = await call.until("conversation.item.truncated")
    seen = types(after)
    assert seen.index("response.done") < seen.index("output_audio_buffer.cleared")
    assert "output_audio_buffer.stopped" not in seen
    assert after[-1].data["audio_end_ms"] > 0


async def test_an_event_too_large_for_the_channel_is_an_error_not_the_end(call: Call) -> None:
    say_text(call, "Hello there.")  # the built-in responder's full reply: many seconds of audio
    done = (await call.until("response.done"))[-1].data["response"]
    # Retrieving the item carries all its audio as base64: far over the peer's 256 KiB limit.
    call.send(type="conversation.item.retrieve", item_id=done["output"][0]["id"], event_id="r1")
    error = (await call.until("error"))[-1]
    call.send(type="output_audio_buffer.clear")  # no need to listen to all of it
    validated(error.raw)
    assert error.data["error"]["code"] == "event_too_large"
    assert "conversation.item.retrieved" in error.data["error"]["message"]
    call.send(type="session.update", session={"type": "realtime", "instructions": "Still here?"})
    updated = (await call.until("session.updated"))[-1]
    assert updated.data["session"]["instructions"] == "Still here?"


async def test_hanging_up_ends_the_call(server: RunningServer, call: Call) -> None:
    await call.peer.events.next()  # session.created
    assert await hang_up(call.http, server.base_url, call.id, api_key=KEY) == 200
    with pytest.raises(Exception, match="closed"):
        await call.peer.events.next(timeout_s=10)
    assert await hang_up(call.http, server.base_url, call.id, api_key=KEY) == 404


async def test_a_sideband_client_sees_the_call_and_can_steer_it(
    server: RunningServer, call: Call
) -> None:
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY)
    async with client.realtime.connect(call_id=call.id) as sideband:
        created = await sideband.recv()
        assert created.type == "session.created"
        await sideband.session.update(
            session={"type": "realtime", "instructions": "Be brief.", **TRANSCRIBED}
        )
        updated = await sideband.recv()
        assert updated.type == "session.updated"
        assert updated.session.instructions == "Be brief."
        # The peer sees the update the sideband made.
        on_channel = await call.until("session.updated")
        assert on_channel[-1].data["session"]["instructions"] == "Be brief."
        # And the sideband sees the peer's turn.
        say_text(call, "Hi.", max_output_tokens=4)
        kinds = []
        while (event := await sideband.recv()).type != "response.done":
            kinds.append(event.type)
        assert "output_audio_buffer.started" in kinds
        assert "response.output_audio.delta" not in kinds


async def test_attaching_to_an_unknown_call_is_a_clear_error(server: RunningServer) -> None:
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY)
    async with client.realtime.connect(call_id="rtc_nope") as sideband:
        event = await sideband.recv()
    assert event.type == "error"
    assert event.error.code == "call_not_found"


async def test_bad_offers_get_openai_shaped_errors(server: RunningServer) -> None:
    url = f"{server.base_url}/realtime/calls"
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient() as http:
        cases = [
            (await http.post(url, content=b"v=0", headers={**auth, "Content-Type": "text/plain"})),
            (
                await http.post(
                    url, content=b"", headers={**auth, "Content-Type": "application/sdp"}
                )
            ),
            (
                await http.post(
                    url,
                    content=b"not sdp at all",
                    headers={**auth, "Content-Type": "application/sdp"},
                )
            ),
            (
                await http.post(
                    url, headers=auth, files={"sdp": (None, "v=0"), "session": (None, "{")}
                )
            ),
            (
                await http.post(
                    url,
                    headers=auth,
                    files={
                        "sdp": (None, "v=0"),
                        "session": (None, json.dumps({"type": "realtime", "output_modalities": 3})),
                    },
                )
            ),
        ]
        unknown = await http.post(f"{url}/rtc_nope/hangup", headers=auth)
    statuses = [r.status_code for r in cases]
    assert statuses == [415, 400, 400, 400, 400]
    for response in [*cases, unknown]:
        error = response.json()["error"]
        assert error["message"] and error["type"]
    assert cases[1].json()["error"]["param"] == "sdp"
    assert cases[3].json()["error"]["param"] == "session"
    assert cases[4].json()["error"]["param"].startswith("session")
    assert unknown.status_code == 404


async def test_calls_need_a_key_when_keys_are_configured(start_server: Any) -> None:
    srv = start_server(api_keys=["right"])
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        offer = await peer.create_offer()
        wrong = await http.post(
            f"{srv.base_url}/realtime/calls",
            content=offer,
            headers={"Authorization": "Bearer wrong", "Content-Type": "application/sdp"},
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        answer = await post_offer(http, srv.base_url, offer, api_key="right")
        assert answer.call_id.startswith("rtc_")


async def test_pages_on_other_origins_may_create_calls_and_read_the_call_id(
    server: RunningServer,
) -> None:
    url = f"{server.base_url}/realtime/calls"
    origin = "http://app.example"
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        preflight = await http.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", origin)
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        created = await http.post(
            url,
            content=await peer.create_offer(),
            headers={
                "Origin": origin,
                "Authorization": f"Bearer {KEY}",
                "Content-Type": "application/sdp",
            },
        )
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] in ("*", origin)
    assert "location" in created.headers["access-control-expose-headers"].lower()
    assert created.headers["location"].rsplit("/", 1)[-1].startswith("rtc_")


async def test_playout_counts_what_was_played_and_reports_the_end() -> None:
    track = PlayoutTrack()
    stopped: list[str] = []

    async def on_stopped(response_id: str) -> None:
        stopped.append(response_id)

    track.bind(on_stopped)
    track.play("r1", "i1", 0, bytes(2 * 2400))  # 100 ms
    for _ in range(3):
        frame = await track.recv()
        assert frame.samples == 480
    cut = track.clear(None)
    assert cut is not None and (cut.response_id, cut.item_id, cut.played_ms) == ("r1", "i1", 60)
    assert track.clear(None) is None  # nothing plays any more
    track.play("r2", "i2", 0, bytes(2 * 480))
    track.end("r2")
    frames = [await track.recv() for _ in range(2)]
    assert [f.pts for f in frames] == [3 * 480, 4 * 480]  # timestamps keep increasing
    await asyncio.sleep(0)
    assert stopped == ["r2"]
    track.stop()


async def test_concurrent_set_ups_cannot_exceed_the_session_limit(start_server: Any) -> None:
    srv = start_server(max_sessions=2)
    async with httpx.AsyncClient() as http:
        peers = [WebRTCPeer() for _ in range(4)]
        try:
            offers = [await peer.create_offer() for peer in peers]
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{srv.base_url}/realtime/calls",
                        content=offer,
                        headers={
                            "Authorization": f"Bearer {KEY}",
                            "Content-Type": "application/sdp",
                        },
                    )
                    for offer in offers
                )
            )
        finally:
            for peer in peers:
                await peer.close()
    assert sorted(r.status_code for r in responses) == [201, 201, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "session_limit_reached"
