"""Policy `disclosure` on a relayed session (an upstream voxgate process), heard by the
official `openai` SDK over WebSocket: the relaying server says the sentence itself, word for
word, before the upstream's first reply (the test transcribes the audio it received with the
embedded Whisper), and the upstream's conversation holds what was said. A WebRTC call
through the relay hears it on its track before the upstream's reply plays."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _relay import (
    ADMIN_KEY,
    MODEL,
    Seen,
    client,
    events_until,
    module_upstream,
    next_event,
    relay_server,
    rest_get,
    say,
)
from _upstream import UpstreamVoxgate
from conftest import heard, validated
from voxgate.audio.resample import resample
from voxgate.call.webrtc import WebRTCPeer, post_offer
from voxgate.control.policy import Policy
from voxgate.engines.local.whisper import WhisperEngine

DISCLOSURE = "This call is recorded and you are talking to a computer."
DISCLOSURE_KEYS = {"call", "recorded", "talking", "computer"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    yield from module_upstream(tmp_path_factory)


@pytest.fixture
async def whisper() -> AsyncIterator[WhisperEngine]:
    engine = await WhisperEngine.load(workers=1)
    yield engine
    await engine.aclose()


async def transcribe(engine: WhisperEngine, pcm24k: bytes) -> str:
    stream = await engine.open_stream()
    await stream.push(resample(pcm24k, 24000, 16000))
    return (await stream.finish()).text


async def test_the_disclosure_is_heard_before_the_upstreams_first_reply(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path, whisper: WhisperEngine
) -> None:
    server = relay_server(start_server, upstream, tmp_path, policy=Policy(disclosure=DISCLOSURE))
    seen = Seen()
    async with client(server) as c, c.realtime.connect(model=MODEL) as conn:
        # The application asks at once, before session.created has even arrived.
        await say(conn, "Tell me about the sea.")
        events = [await next_event(conn, seen)]
        events += await events_until(conn, seen, "response.done")
        events += await events_until(conn, seen, "response.done")
        disclosure_done = next(e for e in events if e.type == "response.done")
        said_item = disclosure_done.response.output[0]
        # The upstream's own conversation holds the sentence, as the assistant's.
        await conn.conversation.item.retrieve(item_id=said_item.id)
        retrieved = (await events_until(conn, seen, "conversation.item.retrieved"))[-1]

    assert events[0].type == "session.created"
    assert not [e for e in events if e.type == "error"]
    disclosure, reply = [e.response for e in events if e.type == "response.created"]
    assert disclosure.metadata == {"voxgate": "disclosure"}
    kinds = [e.type for e in events]
    # Nothing of the upstream's reply before the disclosure was said to the end.
    assert kinds.index("response.done") < kinds.index("response.created", 2)
    before = events[: kinds.index("response.done") + 1]
    assert all(getattr(e, "response_id", disclosure.id) == disclosure.id for e in before)
    [said, answered] = [e for e in events if e.type == "response.output_audio_transcript.done"]
    assert said.transcript == DISCLOSURE
    assert "the sea" in answered.transcript.lower()
    audio = b"".join(
        base64.b64decode(e.delta)
        for e in events
        if e.type == "response.output_audio.delta" and e.response_id == disclosure.id
    )
    text = await transcribe(whisper, audio)
    assert heard(text, DISCLOSURE_KEYS), text

    assert retrieved.item.id == said_item.id
    assert retrieved.item.role == "assistant"
    assert [part.text for part in retrieved.item.content] == [DISCLOSURE]

    # The books: the sentence was said with voxgate's own engines (free), the reply is the
    # upstream model's; the audit log says what the session heard first.
    [mine] = (await rest_get(server.base_url, "/admin/sessions"))["data"]
    record = await rest_get(server.base_url, f"/admin/sessions/{mine['id']}")
    models = {row["response_id"]: row["model"] for row in record["usage"]}
    assert models == {disclosure.id: "voxgate-local", reply.id: MODEL}
    [entry] = (await rest_get(server.base_url, "/admin/audit?action=disclosure"))["data"]
    assert entry["code"] is None
    assert entry["detail"]["text"] == DISCLOSURE


async def test_a_webrtc_call_through_the_relay_hears_the_disclosure_on_its_track_first(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path, whisper: WhisperEngine
) -> None:
    server = relay_server(start_server, upstream, tmp_path, policy=Policy(disclosure=DISCLOSURE))
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        offer = await peer.create_offer()
        answer = await post_offer(http, server.base_url, offer, api_key=ADMIN_KEY, model=MODEL)
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        # An application greets the caller as soon as the call connects.
        peer.send({"type": "conversation.item.create", "item": user_text("Tell me about the sea.")})
        peer.send({"type": "response.create"})
        stopped: list[str] = []

        def second_stop(event: Any) -> bool:
            if event.type == "output_audio_buffer.stopped":
                stopped.append(event.data["response_id"])
            return len(stopped) == 2

        events = await peer.events.until(second_stop, 60)
        for event in events:
            validated(event.raw)
        kinds = [e.type for e in events]
        assert kinds[0] == "session.created" and "error" not in kinds
        disclosure, reply = [e.data["response"] for e in events if e.type == "response.created"]
        assert disclosure["metadata"] == {"voxgate": "disclosure"}
        # The disclosure played to its end before the upstream's reply started playing.
        starts = [e for e in events if e.type == "output_audio_buffer.started"]
        ends = [e for e in events if e.type == "output_audio_buffer.stopped"]
        assert [e.data["response_id"] for e in starts] == [disclosure["id"], reply["id"]]
        assert stopped == [disclosure["id"], reply["id"]]
        assert "output_audio_buffer.cleared" not in kinds
        assert kinds.index("response.done") < kinds.index("response.created", 2)
        text = await transcribe(whisper, peer.audio.pcm(starts[0].at, ends[0].at + 0.3, rate=24000))
        assert heard(text, DISCLOSURE_KEYS), text
        assert peer.audio.audible_seconds(ends[0].at, ends[1].at + 0.3) > 0.3


def user_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
