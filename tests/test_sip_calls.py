"""Phone calls from SIPp to voxgate's SIP endpoint: a caller that speaks (G.711 RTP from a pcap
made here) and hears the spoken reply, CANCEL while ringing, a caller from an address no trunk
allows, DTMF reaching a sideband, and malformed messages that leave the endpoint serving."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from _realtime import Events
from _sip import (
    RtpCapture,
    audible_seconds,
    dtmf_packets,
    even_udp_port,
    finish,
    require_sipp,
    rtp_packets,
    sipp,
    transcribe_8k,
    ulaw_speech,
    write_pcap,
)
from conftest import RunningServer, SlowChatServer, heard, validated

pytestmark = pytest.mark.slow

NUMBER = "+15551234567"
KEY = "sk-phone"
ANSWER = "It is sunny in Paris today."
ANSWER_SCRIPT = [
    ({"role": "assistant", "content": "It is sunny "}, None),
    ({"content": "in Paris today."}, None),
    ({}, "stop"),
]
SILENCE = b"\xff" * 160  # 20 ms of μ-law silence


def sip_settings(**overrides: Any) -> dict[str, Any]:
    sip: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "rtp_ports": "31000-31999",
        "trunks": [{"name": "local", "allowed_sources": ["127.0.0.1/32"], "key": KEY}],
        "routes": [{"number": NUMBER, "session": {"instructions": "Answer in one sentence."}}],
    }
    sip.update(overrides)
    return sip


@pytest.fixture
def llm() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.01, script=ANSWER_SCRIPT)
    yield server
    server.stop()


def start_phone_server(
    start_server: Any, llm: SlowChatServer, *, raw: bool = False, **sip: Any
) -> RunningServer:
    require_sipp(raw=raw)
    srv: RunningServer = start_server(
        api_keys=[KEY], llm_base_url=llm.url, llm_model="m", sip=sip_settings(**sip)
    )
    return srv


def sip_target(srv: RunningServer) -> str:
    return f"127.0.0.1:{srv.app.state.voxgate.sip.port}"


def test_caller_speaks_and_hears_a_spoken_reply(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    srv = start_phone_server(start_server, llm, raw=True)
    speech = ulaw_speech("What is the weather like in Paris today?")
    # The caller speaks after the disclosure phone calls begin with (it is not listened to).
    write_pcap(tmp_path / "caller.pcap", rtp_packets(SILENCE * 200 + speech + SILENCE * 75))
    media_port = even_udp_port()
    with (
        RtpCapture(media_port) as capture,
        sipp(
            "uac_call",
            sip_target(srv),
            "-s",
            NUMBER,
            "-d",
            # Long enough for the disclosure, the question and the whole reply, even when the
            # reply starts late on a busy machine.
            "15000",
            cwd=tmp_path,
            media_port=media_port,
        ) as caller,
    ):
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
    # The caller's words reached the language model ...
    [request] = llm.requests
    assert heard(request["messages"][-1]["content"], {"weather", "paris"}), request["messages"]
    # ... and its answer came back as speech on the caller's RTP stream.
    pcm = capture.pcm8k()
    assert audible_seconds(pcm) > 1.0, f"{len(pcm) / 16000:.1f} s received, mostly silent"
    said = transcribe_8k(pcm)
    # The scripted answer is "It is sunny in Paris today."; tiny.en on 8 kHz audio sometimes
    # hears "Paris" as "pairs", so the words checked are the ones it does not confuse.
    assert heard(said, {"sunny", "today"}), said


def test_cancel_before_the_answer(start_server: Any, llm: SlowChatServer, tmp_path: Path) -> None:
    # A webhook route that nobody answers keeps the call ringing until the caller gives up.
    srv = start_phone_server(
        start_server,
        llm,
        webhook_secret="whsec_" + "QUJD" * 8,
        routes=[{"number": NUMBER, "webhook": "http://127.0.0.1:9/unreachable"}],
        accept_timeout_s=30,
    )
    with sipp("uac_cancel", sip_target(srv), "-s", NUMBER, cwd=tmp_path) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
    assert not srv.app.state.voxgate.sip.calls
    assert not srv.app.state.voxgate.manager.sessions


def test_caller_from_a_disallowed_address_gets_403(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    srv = start_phone_server(start_server, llm)
    # The trunk allows 127.0.0.1/32 only; this caller sends from 127.0.0.2.
    with sipp(
        "uac_forbidden", sip_target(srv), "-s", NUMBER, cwd=tmp_path, local_ip="127.0.0.2"
    ) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
    assert not srv.app.state.voxgate.manager.sessions


async def test_dtmf_reaches_a_sideband(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    srv = start_phone_server(start_server, llm, raw=True)
    write_pcap(
        tmp_path / "caller.pcap", rtp_packets(SILENCE * 50) + dtmf_packets("42#", start_seq=50)
    )
    state = srv.app.state.voxgate
    with sipp(
        "uac_call",
        sip_target(srv),
        "-s",
        NUMBER,
        "-d",
        "6000",
        cwd=tmp_path,
        media_port=even_udp_port(),
    ) as caller:
        call_id = await _wait_for_call(state)
        async with (
            AsyncOpenAI(base_url=srv.base_url, api_key=KEY) as client,
            client.realtime.connect(call_id=call_id) as sideband,
        ):
            side = Events(sideband)
            await side.expect("session.created")
            keys = []
            while len(keys) < 3:
                [event] = (await side.until("input_audio_buffer.dtmf_event_received"))[-1:]
                keys.append(event.event)
        result = await asyncio.to_thread(finish, caller, tmp_path)
    assert keys == ["4", "2", "#"]
    assert caller.returncode == 0, result
    assert all(validated(e.model_dump_json()) for e in side.all)


def test_malformed_messages_leave_the_endpoint_serving(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    srv = start_phone_server(start_server, llm)
    port = srv.app.state.voxgate.sip.port
    junk = [
        b"\x00\x01\x02 not sip at all",
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"INVITE sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKj\r\n"
        b"From: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: junk1\r\nCSeq: x INVITE\r\n\r\n",
        b"INVITE sip:"
        + NUMBER.encode()
        + b"@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKk\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: junk2\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 5000\r\n\r\nv=0",
        b"SIP/2.0 999 What\r\n\r\n",
        b"BYE sip:x@h SIP/2.0\r\n" + b"X: " + b"a" * 65000 + b"\r\n\r\n",
        "INVITE sip:ü@h SIP/2.0\r\nVia: \xff\r\n\r\n".encode("latin-1"),
    ]
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        for datagram in junk:
            s.sendto(datagram, ("127.0.0.1", port))
        # The malformed request whose headers say where to reply gets a 400.
        replies.append(s.recv(65535))
    assert replies[0].startswith(b"SIP/2.0 400"), replies
    # OPTIONS (a trunk's keep-alive probe) is answered 200 with what the endpoint allows.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        s.sendto(
            b"OPTIONS sip:voxgate@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKo\r\n"
            b"f: <sip:probe@h>;tag=p\r\nt: <sip:voxgate@h>\r\ni: probe1\r\nCSeq: 7 OPTIONS\r\n"
            b"l: 0\r\n\r\n",
            ("127.0.0.1", port),
        )
        options = s.recv(65535)
    assert options.startswith(b"SIP/2.0 200") and b"INVITE" in options, options
    with sipp("uac_basic", sip_target(srv), "-s", NUMBER, "-d", "500", cwd=tmp_path) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result


async def _wait_for_call(state: Any, timeout_s: float = 15) -> str:
    """The id of the SIP call being served (once its session runs)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if state.manager.calls:
                return str(next(iter(state.manager.calls)))
            await asyncio.sleep(0.05)


def test_trunk_with_credentials_challenges_the_caller(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    trunk = {
        "name": "local",
        "allowed_sources": ["127.0.0.1/32"],
        "key": KEY,
        "username": "pbx",
        "password": "s3cret",
    }
    srv = start_phone_server(start_server, llm, trunks=[trunk])
    target = sip_target(srv)
    # Answering the 401 with the trunk's credentials gets the call answered ...
    good = ("-au", "pbx", "-ap", "s3cret", "-s", NUMBER, "-d", "500")
    with sipp("uac_auth", target, *good, cwd=tmp_path) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
    # ... and a wrong password gets challenged again instead of answered.
    bad = ("-au", "pbx", "-ap", "guess", "-s", NUMBER, "-d", "500")
    with sipp("uac_auth", target, *bad, cwd=tmp_path, timeout_s=5) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode != 0 and "401" in result, result


def test_a_call_at_its_duration_limit_hears_goodbye_then_bye(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    require_sipp(raw=True)
    srv: RunningServer = start_server(
        api_keys=[KEY],
        llm_base_url=llm.url,
        llm_model="m",
        sip=sip_settings(),
        policy={"max_session_seconds": 3},
    )
    media_port = even_udp_port()
    with (
        RtpCapture(media_port) as capture,
        sipp(
            "uac_until_bye", sip_target(srv), "-s", NUMBER, cwd=tmp_path, media_port=media_port
        ) as caller,
    ):
        result = finish(caller, tmp_path, timeout_s=30)
    assert caller.returncode == 0, result  # the server hung up with BYE
    # Before the BYE the caller heard why: the goodbye, spoken on its RTP stream.
    assert heard(transcribe_8k(capture.pcm8k()), {"limit", "goodbye"})


def test_a_call_the_policy_refuses_gets_486(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    require_sipp()
    # The trunk's key may hold no session at all: the call is admitted like any session and
    # turned away as busy, with the admission code in the reason phrase.
    srv: RunningServer = start_server(
        api_keys=[KEY],
        llm_base_url=llm.url,
        llm_model="m",
        sip=sip_settings(),
        policy={"max_concurrent_sessions": 0},
    )
    with sipp("uac_busy", sip_target(srv), "-s", NUMBER, "-trace_msg", cwd=tmp_path) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
    messages = "".join(p.read_text() for p in tmp_path.glob("*_messages.log"))
    assert "486 Busy Here (concurrent_sessions_exceeded)" in messages
    assert not srv.app.state.voxgate.manager.sessions


def test_hold_and_unhold_by_reinvite(
    start_server: Any, llm: SlowChatServer, tmp_path: Path
) -> None:
    srv = start_phone_server(start_server, llm, raw=True)
    media_port = even_udp_port()
    with (
        RtpCapture(media_port) as capture,
        sipp(
            "uac_hold", sip_target(srv), "-s", NUMBER, cwd=tmp_path, media_port=media_port
        ) as caller,
    ):
        result = finish(caller, tmp_path)
    # Both re-INVITEs were answered with the mirrored direction (the scenario checks it) ...
    assert caller.returncode == 0, result
    # ... and while the call was held (1.5 s) the server sent no audio, then sent again.
    times = [t for t, _ in capture.packets]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps and max(gaps) > 1.2, f"largest gap between packets {max(gaps, default=0):.2f} s"
    held_until = times[gaps.index(max(gaps)) + 1]
    assert len([t for t in times if t >= held_until]) > 20  # ≥ 0.4 s of audio after unhold


def test_a_call_over_tcp(start_server: Any, llm: SlowChatServer, tmp_path: Path) -> None:
    srv = start_phone_server(start_server, llm)
    # -t t1: one TCP connection; every request and response of the call travels on it.
    with sipp(
        "uac_basic", sip_target(srv), "-t", "t1", "-s", NUMBER, "-d", "500", cwd=tmp_path
    ) as caller:
        result = finish(caller, tmp_path)
    assert caller.returncode == 0, result
