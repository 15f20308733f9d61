"""A phone leg end to end below SIP: a Session served over an `RtpStream` (real UDP on
loopback) with a `HeadlessTransport`, watched by a sideband as an operator's service would.
The caller is a plain UDP socket speaking RTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import validated
from voxgate.audio import ulaw_to_pcm16
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.engines import EngineSet
from voxgate.session.session import Session
from voxgate.session.testing import MemoryTransport
from voxgate.transports.headless import HeadlessTransport
from voxgate.transports.rtp import RtpStream
from voxgate.transports.rtp_wire import RtpPacket, dtmf_payload, parse_rtp

PHONE_FORMATS = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}},
    },
}


@dataclass
class Call:
    session: Session
    rtp: RtpStream
    sideband: MemoryTransport
    caller: socket.socket
    headless: HeadlessTransport


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    rtp = await RtpStream.open("127.0.0.1", (41000, 41200), "PCMU", 0, 101)
    rtp.set_remote(caller.getsockname())
    connection = RealtimeConnection()
    connection.configure(PHONE_FORMATS)
    tts = ScriptedTTS(ms_per_char=40)
    engines = EngineSet(llm=ScriptedLLM([text_script("Hello.")]), tts=tts)
    headless = HeadlessTransport()
    session = Session(connection, engines, headless, playout=rtp)
    rtp.on_audio = lambda audio: session.track_audio(audio, rtp.format)
    rtp.on_dtmf = session.dtmf
    session.disclose("Hi, a bot.")
    sideband = MemoryTransport(validate=validated)
    task = asyncio.create_task(session.run())
    attached = asyncio.create_task(session.attach(sideband))
    try:
        yield Call(session, rtp, sideband, caller, headless)
    finally:
        await headless.close(1000, "caller hung up")
        async with asyncio.timeout(10):
            await task
            await attached
        await rtp.close()
        caller.close()


async def heard_tone(caller: socket.socket, timeout_s: float = 5.0) -> RtpPacket:
    """The first RTP packet the caller receives that carries sound."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        while True:
            packet = parse_rtp(await loop.sock_recv(caller, 2048))
            pcm = np.frombuffer(ulaw_to_pcm16(packet.payload), "<i2")
            if np.abs(pcm.astype(np.int32)).max() > 1000:
                return packet


async def test_the_caller_hears_the_disclosure_as_g711_and_the_sideband_sees_it(
    call: Call,
) -> None:
    packet = await heard_tone(call.caller)
    assert packet.payload_type == 0 and len(packet.payload) == 160
    events = await call.sideband.events_until("output_audio_buffer.stopped")
    kinds = [e["type"] for e in events]
    created = next(e for e in events if e["type"] == "response.created")
    assert created["response"]["metadata"] == {"voxgate": "disclosure"}
    assert kinds.index("output_audio_buffer.started") < kinds.index("output_audio_buffer.stopped")
    # The headless transport dropped the events nobody reads on the primary connection.
    assert call.headless.dropped >= len(events) - 1


async def test_keypad_presses_reach_the_sideband_as_dtmf_events(call: Call) -> None:
    port = call.rtp.local_port
    for ts, digit in ((8000, "4"), (16000, "#")):
        for end in (False, True, True, True):
            payload = dtmf_payload(digit, end=end, duration=800)
            packet = RtpPacket(101, ts // 100, ts, 99, payload, marker=not end)
            call.caller.sendto(packet.encode(), ("127.0.0.1", port))
    events = await call.sideband.events_until(
        lambda e: e["type"] == "input_audio_buffer.dtmf_event_received" and e["event"] == "#"
    )
    keys = [e["event"] for e in events if e["type"] == "input_audio_buffer.dtmf_event_received"]
    assert keys == ["4", "#"]
