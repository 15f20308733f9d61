"""A WebRTC call through the relay whose upstream (behind the fault proxy) drops mid-reply:
the call goes on with the embedded pipeline, whose answer plays on the same track, and the
output_audio_buffer events stay consistent across the switch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _failover import ADMIN_KEY, LOCAL_ANSWER, MODEL, local_chat, relay_behind_proxy
from _fault_proxy import FaultProxy
from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import SlowChatServer, validated
from voxgate.call.webrtc import WebRTCPeer, post_offer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    with upstream_voxgate(tmp_path_factory.mktemp("webrtc-failover")) as running:
        yield running


async def test_a_webrtc_call_fails_over_mid_reply_and_the_fallback_is_heard(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path
) -> None:
    chat: SlowChatServer = local_chat()
    with FaultProxy("127.0.0.1", upstream.port) as proxy:
        server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path)
        async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
            offer = await peer.create_offer()
            answer = await post_offer(http, server.base_url, offer, api_key=ADMIN_KEY, model=MODEL)
            await peer.accept_answer(answer.sdp)
            await peer.events.wait_open()
            assert (await peer.events.next()).type == "session.created"
            proxy.drop_after("response.output_audio.delta", 5)
            content = [{"type": "input_text", "text": "Tell me about the sea."}]
            peer.send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": content},
                }
            )
            peer.send({"type": "response.create"})
            cut = await peer.events.until("response.done", 30)
            assert cut[-1].data["response"]["status"] == "failed"
            started = [e for e in cut if e.type == "output_audio_buffer.started"]
            assert [e.data["response_id"] for e in started] == [cut[-1].data["response"]["id"]]
            # The embedded pipeline answers the cut-off turn, and it is heard on the track.
            updated = await peer.events.until("session.updated", 10)
            assert updated[-1].data["session"]["model"] == "voxgate-local"
            again = await peer.events.until("response.done", 30)
            local = again[-1].data["response"]
            assert local["status"] == "completed"
            assert LOCAL_ANSWER in local["output"][0]["content"][0]["transcript"]
            later = await peer.events.until(
                lambda e: (
                    e.type == "output_audio_buffer.stopped" and e.data["response_id"] == local["id"]
                ),
                60,
            )
            heard = list(cut + updated + again + later)
            local_started = next(
                e
                for e in heard
                if e.type == "output_audio_buffer.started" and e.data["response_id"] == local["id"]
            )
            assert peer.audio.audible_seconds(local_started.at, later[-1].at + 0.5) > 0.5
    chat.stop()
    for event in heard:
        validated(event.raw)
    # Every reply that started playing was either stopped or cleared, once.
    ends = [
        e.data["response_id"]
        for e in heard
        if e.type in ("output_audio_buffer.stopped", "output_audio_buffer.cleared")
    ]
    starts = [e.data["response_id"] for e in heard if e.type == "output_audio_buffer.started"]
    assert sorted(ends) == sorted(starts), (starts, ends)
