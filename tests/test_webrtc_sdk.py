"""A WebRTC call set up with the official `openai` SDK, with a tool run from a sideband.

The user is an aiortc peer (`voxgate.call.webrtc`): its offer goes through
``client.realtime.calls.create`` (multipart, as a browser app's backend would send it), its
microphone track streams espeak speech in real time, and its ``oai-events`` data channel and
audio track receive the conversation. A server-side app joins the same call by id over a
WebSocket (``client.realtime.connect(call_id=...)``), gives the session a tool, and answers
the tool call. Every server event on both paths is validated against the SDK's types.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import AsyncOpenAI

from _realtime import Events
from conftest import SlowChatServer, heard, speech_pcm24k, validated
from voxgate.call.webrtc import ServerEvent, WebRTCPeer, call_id_from_location

pytestmark = pytest.mark.slow

MODEL = "gpt-realtime"
SPOKEN = ("one two three four five", {"two", "three", "four"})
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ARGUMENTS = json.dumps({"city": "Paris"})
TOOL_OUTPUT = json.dumps({"forecast": "sunny", "celsius": 21})
ANSWER = "It is sunny in Paris today."
_CALL = {"index": 0, "id": "call_42", "type": "function"}
TOOL_CALL_SCRIPT = [
    ({"role": "assistant", "tool_calls": [{**_CALL, "function": {"name": "get_weather"}}]}, None),
    ({"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS[:7]}}]}, None),
    ({"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS[7:]}}]}, None),
    ({}, "tool_calls"),
]
ANSWER_SCRIPT = [
    ({"role": "assistant", "content": "It is sunny "}, None),
    ({"content": "in Paris today."}, None),
    ({}, "stop"),
]
SILENCE_24K = bytes(2 * 24000 // 2)  # half a second of open microphone before the words



def done_with(response_id: str) -> Any:
    return lambda e: e.type == "response.done" and e.response.id == response_id


async def test_sideband_answers_a_tool_call_on_a_webrtc_call(start_server: Any) -> None:
    llm = SlowChatServer(delay_s=0.01, scripts=[TOOL_CALL_SCRIPT, ANSWER_SCRIPT])
    try:
        srv = start_server(llm_base_url=llm.url, llm_model="m")
        async with (
            AsyncOpenAI(base_url=srv.base_url, api_key="sk-test") as client,
            WebRTCPeer() as peer,
        ):
            call_id = await _connect(client, peer)
            async with client.realtime.connect(call_id=call_id) as sideband:
                side = Events(sideband)
                await side.expect("session.created")
                await sideband.session.update(session={"type": "realtime", "tools": [TOOL]})
                await side.until("session.updated", wait_s=10)
                peer.say(SILENCE_24K + speech_pcm24k(SPOKEN[0]))
                [args] = (await side.until("response.function_call_arguments.done"))[-1:]
                await sideband.conversation.item.create(
                    item={
                        "type": "function_call_output",
                        "call_id": args.call_id,
                        "output": TOOL_OUTPUT,
                    }
                )
                await sideband.response.create()
                created = (await side.until("response.created", wait_s=10))[-1].response
                answered = await side.until(done_with(created.id), wait_s=30)
            # The data channel carries the same conversation, and then the playout's end.
            stopped = await peer.events.until(
                lambda e: (
                    e.type == "output_audio_buffer.stopped" and e.data["response_id"] == created.id
                ),
                timeout_s=30,
            )
            on_channel = [validated(e.raw) for e in peer.events.received]
    finally:
        llm.stop()

    assert args.call_id == "call_42" and json.loads(args.arguments) == {"city": "Paris"}
    done = answered[-1].response
    assert done.status == "completed", done
    # The language model was asked twice: first with the tool and what the user said, then
    # with the tool's output after its own call.
    first, second = llm.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert heard(first["messages"][-1]["content"], SPOKEN[1]), first["messages"][-1]
    tool_messages = [m for m in second["messages"] if m.get("role") == "tool"]
    assert tool_messages == [{"role": "tool", "tool_call_id": "call_42", "content": TOOL_OUTPUT}]
    # The answer's transcript reached the sideband and the data channel.
    assert _transcript(side.all, created.id) == ANSWER
    assert _transcript(on_channel, created.id) == ANSWER
    assert [e.type for e in on_channel][0] == "session.created"
    assert not [e for e in on_channel if e.type == "response.output_audio.delta"]
    # Its audio was played on the call's audio track: over half a second of sound between
    # the response's start and the end of its playout.
    began = _first(peer.events.received, "output_audio_buffer.started", created.id)
    assert peer.audio.audible_seconds(began.at, stopped[-1].at) > 0.5
    assert peer.audio.first_audible(began.at) is not None


async def _connect(client: AsyncOpenAI, peer: WebRTCPeer) -> str:
    """Set up the call through the SDK (multipart offer and session); the call id."""
    offer = await peer.create_offer()
    session = {
        "type": "realtime",
        "model": MODEL,
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
    }
    raw = await client.realtime.calls.with_raw_response.create(sdp=offer, session=session)
    assert raw.status_code == 201
    assert raw.headers["content-type"].startswith("application/sdp")
    call_id = call_id_from_location(raw.headers["location"])
    assert call_id.startswith("rtc_")
    await peer.accept_answer(raw.parse().text)
    await peer.events.wait_open()
    return call_id


def _transcript(events: list[Any], response_id: str) -> str:
    deltas = [
        e.delta
        for e in events
        if e.type == "response.output_audio_transcript.delta" and e.response_id == response_id
    ]
    [done] = [
        e
        for e in events
        if e.type == "response.output_audio_transcript.done" and e.response_id == response_id
    ]
    assert "".join(deltas) == done.transcript
    return str(done.transcript)


def _first(events: list[ServerEvent], kind: str, response_id: str) -> ServerEvent:
    return next(e for e in events if e.type == kind and e.data.get("response_id") == response_id)
