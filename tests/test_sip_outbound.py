"""Outbound calls: ``POST /v1/realtime/calls/outbound`` rings a SIPp phone through a trunk;
once answered the call is a session like an inbound one — the callee's speech reaches the
model, the spoken reply reaches the callee, a sideband follows by call id, ``hangup`` sends
BYE — and the policy gates who may be called and how often."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _espeak import speak
from _realtime import Events
from _sip import (
    RtpCapture,
    audible_seconds,
    even_udp_port,
    finish,
    require_sipp,
    rtp_packets,
    sipp,
    transcribe_8k,
    udp_port,
    ulaw_speech,
    write_pcap,
)
from conftest import SlowChatServer, heard
from voxgate.audio.g711 import alaw_to_pcm16, pcm16_to_alaw

pytestmark = pytest.mark.slow

KEY = "sk-dialer"
ANSWER_SCRIPT = [
    ({"role": "assistant", "content": "We open at nine "}, None),
    ({"content": "tomorrow morning."}, None),
    ({}, "stop"),
]
SILENCE = b"\xff" * 160


@pytest.fixture
def llm() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.01, script=ANSWER_SCRIPT)
    yield server
    server.stop()


def carrier_trunk(uas_port: int) -> dict[str, Any]:
    """SIP settings with one trunk, "carrier", whose outbound calls go to 127.0.0.1:`uas_port`."""
    return {
        "listen": "127.0.0.1:0",
        "rtp_ports": "33000-33999",
        "trunks": [
            {"name": "carrier", "allowed_sources": [], "outbound_uri": f"sip:127.0.0.1:{uas_port}"}
        ],
    }


@contextmanager
def callee_phone(
    scenario: str, uas_port: int, media_port: int, tmp_path: Path
) -> Iterator[tuple[RtpCapture, subprocess.Popen[str]]]:
    """A SIPp phone that takes one call on `uas_port` as `scenario` says; its media port is
    `media_port`, where the audio voxgate sends it is captured."""
    with (
        RtpCapture(media_port) as capture,
        sipp(scenario, None, "-p", str(uas_port), cwd=tmp_path, media_port=media_port) as callee,
    ):
        yield capture, callee


async def sideband_answer(client: AsyncOpenAI, call_id: str) -> list[Any]:
    """Follow the call on a sideband until the answer to the callee (not the opening
    disclosure) has been played out; the events up to that response.done."""
    async with client.realtime.connect(call_id=call_id) as sideband:
        side = Events(sideband)
        await side.expect("session.created")
        done = await side.until(_answer_done, wait_s=40)
        rid = done[-1].response.id
        await side.until(lambda e: e.type == "output_audio_buffer.stopped" and e.response_id == rid)
    return done


async def test_outbound_call_to_a_sipp_phone_talks(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    require_sipp(raw=True)
    uas_port, media_port = udp_port(), even_udp_port()
    sip = carrier_trunk(uas_port)
    policy = {"allowed_outbound_prefixes": ["+1555"], "outbound_calls_per_minute": 1}
    srv = start_server(api_keys=[KEY], llm_base_url=llm.url, llm_model="m", sip=sip, policy=policy)
    speech = ulaw_speech("What time do you open tomorrow?")
    # The caller speaks after the disclosure phone calls begin with (it is not listened to).
    write_pcap(tmp_path / "callee.pcap", rtp_packets(SILENCE * 200 + speech + SILENCE * 75))
    headers = {"Authorization": f"Bearer {KEY}"}
    place = {
        "to": "+15550001111",
        "from": "+15559990000",
        "trunk": "carrier",
        "session": {"instructions": "You confirm opening hours."},
    }
    async with (
        httpx.AsyncClient(base_url=srv.base_url, headers=headers, timeout=40) as http,
        AsyncOpenAI(base_url=srv.base_url, api_key=KEY) as client,
    ):
        # A number outside the policy's prefixes is refused before anything rings.
        refused = await http.post("/realtime/calls/outbound", json={**place, "to": "+4420700"})
        assert (
            refused.status_code == 403 and refused.json()["error"]["code"] == "number_not_allowed"
        )

        with callee_phone("uas_answer", uas_port, media_port, tmp_path) as (capture, callee):
            placed = await http.post("/realtime/calls/outbound", json=place)
            assert placed.status_code == 200, placed.text
            outcome = placed.json()
            assert outcome["status"] == "answered" and outcome["progress"] == [
                "ringing",
                "answered",
            ]
            call_id = outcome["call_id"]
            # The policy's rate: one outbound call per minute for this key (checked at once,
            # so that both calls fall in the same one-minute window).
            again = await http.post("/realtime/calls/outbound", json=place)
            assert again.status_code == 429, again.text
            assert again.json()["error"]["code"] == "rate_limit_exceeded"
            # The call opens with the disclosure; then the callee speaks and is answered.
            done = await sideband_answer(client, call_id)
            await client.realtime.calls.hangup(call_id)
            result = await asyncio.to_thread(finish, callee, tmp_path)
        assert callee.returncode == 0, result  # rang, answered, and got our BYE
        # The call is in the ledger as a SIP session.
        record = await http.get(f"/admin/sessions/{outcome['session_id']}")
        assert record.status_code == 200, record.text
        assert record.json()["transport"] == "sip"

    assert done[-1].response.status == "completed"
    [request] = llm.requests
    assert heard(request["messages"][-1]["content"], {"time", "open", "tomorrow"})
    pcm = capture.pcm8k()
    assert audible_seconds(pcm) >= 1.0
    assert heard(transcribe_8k(pcm), {"nine", "tomorrow"})


async def test_an_outbound_call_talks_in_the_codec_the_callee_answers(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    # The callee takes A-law only: its scenario checks that the INVITE offers PCMU, PCMA and
    # telephone-event, and answers PCMA; the call must then be A-law both ways.
    require_sipp(raw=True)
    uas_port, media_port = udp_port(), even_udp_port()
    sip = carrier_trunk(uas_port)
    srv = start_server(api_keys=[KEY], llm_base_url=llm.url, llm_model="m", sip=sip)
    quiet = pcm16_to_alaw(bytes(320))
    speech = pcm16_to_alaw(speak("What time do you open tomorrow?", sample_rate=8000))
    packets = rtp_packets(quiet * 200 + speech + quiet * 75, payload_type=8)
    write_pcap(tmp_path / "callee.pcap", packets)
    place = {"to": "+15550001111", "trunk": "carrier", "session": {"instructions": "Hours."}}
    async with (
        httpx.AsyncClient(base_url=srv.base_url, timeout=40) as http,
        AsyncOpenAI(base_url=srv.base_url, api_key=KEY) as client,
    ):
        http.headers["Authorization"] = f"Bearer {KEY}"
        with callee_phone("uas_answer_pcma", uas_port, media_port, tmp_path) as (capture, callee):
            placed = await http.post("/realtime/calls/outbound", json=place)
            assert placed.status_code == 200, placed.text
            assert placed.json()["status"] == "answered", placed.text
            call_id = placed.json()["call_id"]
            await sideband_answer(client, call_id)
            await client.realtime.calls.hangup(call_id)
            result = await asyncio.to_thread(finish, callee, tmp_path)
        assert callee.returncode == 0, result  # the offer held both codecs; A-law was answered

    # The callee's A-law speech was understood, and the reply came back as A-law (PT 8).
    [request] = llm.requests
    assert heard(request["messages"][-1]["content"], {"time", "open", "tomorrow"})
    assert capture.payloads(8) and not capture.payloads(0)
    pcm = alaw_to_pcm16(b"".join(capture.payloads(8)))
    assert audible_seconds(pcm) >= 1.0
    assert heard(transcribe_8k(pcm), {"nine", "tomorrow"})


def _answer_done(event: Any) -> bool:
    """The end of a response that is not the call's opening disclosure."""
    if event.type != "response.done":
        return False
    return (event.response.metadata or {}).get("voxgate") != "disclosure"
