"""A WebRTC call keeps the same books: its reply plays on the media track, and the
``response.done`` on the data channel comes with its usage row already in the ledger."""

from __future__ import annotations

from typing import Any

import httpx

from voxgate.call.webrtc import WebRTCPeer, post_offer
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.engines import EngineSet


async def test_a_webrtc_reply_is_in_the_ledger_when_its_done_arrives(
    start_server: Any, database_url: str
) -> None:
    engines = EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS())
    server = start_server(engines, database_url=database_url)
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        answer = await post_offer(http, server.base_url, await peer.create_offer(), api_key="k")
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        created = await peer.events.next()
        assert created.type == "session.created"
        content = [{"type": "input_text", "text": "Hello over the call"}]
        peer.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": content},
            }
        )
        peer.send({"type": "response.create", "response": {"max_output_tokens": 8}})
        done = (await peer.events.until("response.done", 30.0))[-1]
        # Asked the moment response.done arrived: the row was written before it was sent.
        record = (await http.get(f"/v1/admin/sessions/{created.data['session']['id']}")).json()
    [row] = record["usage"]
    assert row["response_id"] == done.data["response"]["id"]
    assert record["transport"] == "webrtc"
    usage = done.data["response"]["usage"]
    assert row["output_audio_tokens"] == usage["output_token_details"]["audio_tokens"] > 0
    assert row["audio_seconds_out"] > 0 and row["characters_spoken"] > 0
