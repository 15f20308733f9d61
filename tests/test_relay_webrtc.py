"""A WebRTC client whose model is relayed to an upstream Realtime service (a second voxgate
process): its microphone goes upstream as appended audio, the upstream's audio deltas play
on the call's track, voxgate makes the ``output_audio_buffer.*`` events, and barge-in
truncates the upstream's item where the user stopped hearing it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import RunningServer, speech_pcm24k, validated
from voxgate.call.webrtc import ServerEvent, WebRTCPeer, call_id_from_location, post_offer

SPOKEN = "one two three four five"
TRANSCRIBED = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    with upstream_voxgate(tmp_path_factory.mktemp("webrtc-relay")) as running:
        yield running


@pytest.fixture
def server(start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path) -> RunningServer:
    # Its own store: the admin listing below must hold this test's session alone.
    running: RunningServer = start_server(
        data_dir=tmp_path / "relay", upstreams=[upstream.setting(models=["gpt-realtime*"])]
    )
    return running


@pytest.fixture
async def peer(server: RunningServer) -> AsyncIterator[WebRTCPeer]:
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        offer = await peer.create_offer()
        answer = await post_offer(http, server.base_url, offer, api_key="k", model="gpt-realtime")
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        created = await peer.events.next()
        assert created.type == "session.created"
        peer.send({"type": "session.update", "session": TRANSCRIBED})
        await peer.events.until("session.updated")
        yield peer


def types(events: list[ServerEvent]) -> list[str]:
    return [e.type for e in events]


async def test_a_webrtc_client_talks_through_the_relay(
    peer: WebRTCPeer, server: RunningServer
) -> None:
    peer.send({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 12}})
    await peer.events.until("session.updated")
    peer.say(bytes(24000) + speech_pcm24k(SPOKEN))
    events = await peer.events.until("output_audio_buffer.stopped", timeout_s=60)
    for event in events:
        validated(event.raw)
    seen = types(events)
    # The upstream heard the microphone (its VAD and transcription ran on the appended audio).
    assert "input_audio_buffer.speech_started" in seen
    assert "conversation.item.input_audio_transcription.completed" in seen
    # Its reply played on the track; no audio went over the data channel.
    assert "response.output_audio.delta" not in seen
    started = events[seen.index("output_audio_buffer.started")]
    [done] = [e for e in events if e.type == "response.done"]
    rid = done.data["response"]["id"]
    assert started.data["response_id"] == events[-1].data["response_id"] == rid
    assert seen.index("output_audio_buffer.started") < seen.index("response.done")
    assert peer.audio.audible_seconds(started.at, events[-1].at + 0.5) > 1.0
    # The relayed session shows in the metrics like a local one, named by its upstream.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.settings.port}") as http:
        metrics = (await http.get("/metrics")).text
        [record] = (await http.get("/v1/admin/sessions")).json()["data"]
    assert (record["engine"], record["transport"]) == ("upstream:default", "webrtc")
    assert 'voxgate_sessions_by_engine{engine="relay:default"} 1.0' in metrics
    status = done.data["response"]["status"]
    assert f'voxgate_responses_total{{status="{status}"}} 1.0' in metrics


async def test_barge_in_truncates_the_upstream_item_at_the_played_position(
    peer: WebRTCPeer,
) -> None:
    # The built-in responder's first answer is long (many seconds of speech).
    peer.say(bytes(24000) + speech_pcm24k(SPOKEN))
    before = await peer.events.until("output_audio_buffer.started", timeout_s=60)
    rid = before[-1].data["response_id"]
    [item] = [e.data["item"] for e in before if e.type == "response.output_item.added"]
    await peer.audio.wait_audible(after=before[-1].at, timeout_s=10)
    await asyncio.sleep(1.5)  # the user hears some of the reply
    peer.say(speech_pcm24k(SPOKEN))
    events = await peer.events.until("conversation.item.truncated", timeout_s=30)
    for event in events:
        validated(event.raw)
    seen = types(events)
    assert "input_audio_buffer.speech_started" in seen
    assert "output_audio_buffer.stopped" not in types(before + events)
    cleared = events[seen.index("output_audio_buffer.cleared")]
    assert cleared.data["response_id"] == rid
    truncated = events[-1].data  # the upstream's own answer to voxgate's truncate
    assert truncated["item_id"] == item["id"]
    # Truncated at what was played: at least the sound that reached the peer before the
    # barge-in, at most the stretch of the track it spans (a voice pauses between phrases).
    # The stretch is measured in media time (the frames' pts), not by arrival: a loaded
    # peer takes frames in bursts, so arrival times understate what was played. Frames sent
    # just before the cut may arrive after the cleared event (the data channel overtakes
    # the media path and the peer's jitter buffer): up to 400 ms of them are allowed for.
    heard_ms = 1000 * peer.audio.audible_seconds(before[-1].at, cleared.at)
    first = peer.audio.first_audible(before[-1].at)
    last = peer.audio.between(before[-1].at, cleared.at)[-1]
    assert first is not None and first.pts is not None and last.pts is not None
    played_ms = 1000 * ((last.pts - first.pts) / last.rate + len(last.pcm) / 2 / last.rate)
    assert truncated["audio_end_ms"] >= 1000, truncated
    assert heard_ms - 200 <= truncated["audio_end_ms"] <= played_ms + 400, (
        truncated,
        heard_ms,
        played_ms,
    )
    # The upstream's item now holds just that much audio.
    peer.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    retrieved = (await peer.events.until("conversation.item.retrieved"))[-1]
    audio = base64.b64decode(retrieved.data["item"]["content"][0]["audio"])
    assert len(audio) / 2 / 24 == pytest.approx(truncated["audio_end_ms"], abs=1)
    # And the sound stops (allowing for frames in flight on a busy machine).
    await asyncio.sleep(1.5)
    assert peer.audio.audible_seconds(cleared.at + 1.0, cleared.at + 1.5) == 0


async def test_an_sdk_call_through_the_relay_starts_configured_and_takes_a_sideband(
    server: RunningServer,
) -> None:
    client = AsyncOpenAI(base_url=server.base_url, api_key="k")
    session: Any = {"type": "realtime", "model": "gpt-realtime", "instructions": "Be a pirate."}
    async with WebRTCPeer() as peer:
        offer = await peer.create_offer()
        raw = await client.realtime.calls.with_raw_response.create(sdp=offer, session=session)
        assert raw.status_code == 201
        call_id = call_id_from_location(raw.headers["location"])
        await peer.accept_answer(raw.parse().text)
        await peer.events.wait_open()
        created = await peer.events.next()
        validated(created.raw)
        # The call's session part went upstream before the client saw the session.
        assert created.data["session"]["instructions"] == "Be a pirate."
        # A backend joins the call here; it sees the relayed session and its events.
        async with client.realtime.connect(call_id=call_id) as sideband:
            first = await sideband.recv()
            assert first.type == "session.created"
            assert first.session.id == created.data["session"]["id"]  # type: ignore[union-attr]
            await sideband.session.update(session={"type": "realtime", "instructions": "Be brief."})
            updated = (await peer.events.until("session.updated"))[-1]
            assert updated.data["session"]["instructions"] == "Be brief."
    await client.close()
