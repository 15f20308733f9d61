"""The SIP user agent without sockets: bytes and times in, bytes and call events out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.server.sip_calls import OUTBOUND_CODECS
from voxgate.transports.sip import digest, sdp
from voxgate.transports.sip.events import (
    Call,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    MediaChanged,
    Output,
    Send,
)
from voxgate.transports.sip.message import SipRequest, SipResponse, parse
from voxgate.transports.sip.stream import StreamError, take_messages
from voxgate.transports.sip.useragent import UserAgent

PEER = ("10.0.0.7", 5062)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def invite(branch: str = "z9hG4bKa1", body: str = OFFER, call_id: str = "c1@x") -> bytes:
    head = (
        f"INVITE sip:+15551234567@voxgate SIP/2.0\r\n"
        f"v: SIP/2.0/UDP 10.0.0.7:5062;branch={branch}\r\n"
        "f: <sip:alice@10.0.0.7>;tag=aa\r\nt: <sip:+15551234567@voxgate>\r\n"
        f"i: {call_id}\r\nCSeq: 1 INVITE\r\nm: <sip:alice@10.0.0.7:5062>\r\n"
        "c: application/sdp\r\n"
        f"l: {len(body)}\r\n\r\n"
    )
    return head.encode() + body.encode()


def in_dialog(method: str, to_tag: str, cseq: int, branch: str, body: str = "") -> bytes:
    return (
        f"{method} sip:voxgate@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.7:5062;branch={branch}\r\n"
        f"From: <sip:alice@10.0.0.7>;tag=aa\r\nTo: <sip:+15551234567@voxgate>;tag={to_tag}\r\n"
        f"Call-ID: c1@x\r\nCSeq: {cseq} {method}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def sent(outputs: list[Output]) -> list[SipRequest | SipResponse]:
    return [parse(o.data) for o in outputs if isinstance(o, Send)]


def statuses(outputs: list[Output]) -> list[int]:
    return [m.status for m in sent(outputs) if isinstance(m, SipResponse)]


def answered_call(ua: UserAgent) -> tuple[object, str]:
    out = ua.receive(invite(), PEER, 0.0)
    [incoming] = [o for o in out if isinstance(o, IncomingCall)]
    call = incoming.call
    offer = sdp.parse(call.invite.body)
    body = sdp.answer(offer, host="127.0.0.1", port=30000, session_id=1, version=1)
    ok = ua.answer(call, body, ("127.0.0.1", 30000), 0.1)
    assert statuses(ok) == [200]
    return call, call.local_tag


def test_invite_gets_trying_ringing_and_an_answer_with_sdp() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    out = ua.receive(invite(), PEER, 0.0)
    assert statuses(out) == [100]
    [incoming] = [o for o in out if isinstance(o, IncomingCall)]
    assert incoming.source == PEER and incoming.call.invite.uri.startswith("sip:+1555")
    assert statuses(ua.ring(incoming.call)) == [180]
    offer = sdp.parse(incoming.call.invite.body)
    assert (offer.codec, offer.payload_type, offer.dtmf_payload_type) == ("PCMA", 8, 101)
    body = sdp.answer(offer, host="127.0.0.1", port=30000, session_id=1, version=1)
    [ok] = sent(ua.answer(incoming.call, body, ("127.0.0.1", 30000), 0.2))
    assert isinstance(ok, SipResponse) and ok.status == 200
    answer = sdp.parse(ok.body)
    assert (answer.port, answer.codec, answer.dtmf_payload_type) == (30000, "PCMA", 101)
    assert ok.to_tag == incoming.call.local_tag and ok.headers.get("contact")


def test_2xx_is_retransmitted_until_the_ack_and_the_call_ends_without_one() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, tag = answered_call(ua)
    assert statuses(ua.tick(0.6)) == [200]  # T1
    assert statuses(ua.tick(1.0)) == []
    assert statuses(ua.tick(1.6)) == [200]  # 2·T1
    ua.receive(in_dialog("ACK", tag, 1, "z9hG4bKack"), PEER, 1.7)
    assert ua.next_deadline() is None or statuses(ua.tick(10.0)) == []

    ua2 = UserAgent("127.0.0.1", 5060)
    answered_call(ua2)
    outputs: list[Output] = []
    now = 0.1
    while (deadline := ua2.next_deadline()) is not None and deadline < 40:
        now = deadline
        outputs += ua2.tick(now)
    methods = [m.method for m in sent(outputs) if isinstance(m, SipRequest)]
    assert "BYE" in methods
    assert any(isinstance(o, CallEnded) and o.reason == "no_ack" for o in outputs)


def test_ack_confirms_and_bye_from_the_caller_ends_the_call() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, tag = answered_call(ua)
    out = ua.receive(in_dialog("ACK", tag, 1, "z9hG4bKack"), PEER, 0.3)
    assert [type(o) for o in out] == [CallConfirmed]
    out = ua.receive(in_dialog("BYE", tag, 2, "z9hG4bKbye"), PEER, 1.0)
    assert statuses(out) == [200]
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["remote_bye"]
    # A retransmitted BYE gets the same 200 again, and no second end.
    again = ua.receive(in_dialog("BYE", tag, 2, "z9hG4bKbye"), PEER, 1.5)
    assert statuses(again) == [200] and not [o for o in again if isinstance(o, CallEnded)]


def test_bye_from_us_is_retransmitted_until_answered() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, tag = answered_call(ua)
    ua.receive(in_dialog("ACK", tag, 1, "z9hG4bKack"), PEER, 0.3)
    [bye] = sent(ua.hangup(call, 1.0))  # type: ignore[arg-type]
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.to_tag == "aa"
    assert [m.method for m in sent(ua.tick(1.5)) if isinstance(m, SipRequest)] == ["BYE"]


def test_cancel_before_the_answer_gives_200_and_487() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    ua.receive(invite(), PEER, 0.0)
    cancel = (
        invite()
        .split(b"\r\n\r\n")[0]
        .replace(b"INVITE sip", b"CANCEL sip")
        .replace(b"1 INVITE", b"1 CANCEL")
        .replace(b"c: application/sdp\r\n", b"")
        .replace(b"l: 134", b"l: 0")
    )
    out = ua.receive(cancel.split(b"\r\nl:")[0] + b"\r\nl: 0\r\n\r\n", PEER, 1.0)
    assert statuses(out) == [200, 487]
    assert [o.reason for o in out if isinstance(o, CallEnded)] == ["cancelled"]
    # The 487 is retransmitted until the ACK.
    assert statuses(ua.tick(1.6)) == [487]


def test_options_and_unknown_methods_and_unknown_dialogs() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    options = in_dialog("OPTIONS", "x", 1, "z9hG4bKo").replace(b";tag=x", b"")
    [ok] = sent(ua.receive(options, PEER, 0.0))
    assert (
        isinstance(ok, SipResponse)
        and ok.status == 200
        and "INVITE" in (ok.headers.get("allow") or "")
    )
    assert statuses(ua.receive(in_dialog("BYE", "nope", 2, "z9hG4bKb"), PEER, 0.0)) == [481]
    assert statuses(ua.receive(in_dialog("SUBSCRIBE", "x", 2, "z9hG4bKs"), PEER, 0.0)) == [405]


def test_malformed_messages_get_400_or_are_dropped_and_never_raise() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    assert ua.receive(b"\x00\xff garbage", PEER, 0.0) == []
    assert ua.receive(b"\r\n\r\n", PEER, 0.0) == []
    bad_cseq = invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    [reply] = ua.receive(bad_cseq, PEER, 0.0)
    assert isinstance(reply, Send) and reply.data.startswith(b"SIP/2.0 400 Bad Request")
    assert b"Call-ID: c1@x" in reply.data and reply.addr == PEER
    no_call_id = invite().replace(b"i: c1@x\r\n", b"")
    assert ua.receive(no_call_id, PEER, 0.0) == []
    bad_sdp = invite(body="v=0\r\nm=video 1 RTP/AVP 96\r\n", call_id="c2@x")
    out = ua.receive(bad_sdp, PEER, 0.0)
    assert statuses(out) == [100]  # the SDP is the application's to judge, at answer time
    for junk in [b"INVITE\r\n\r\n", b"SIP/2.0 200\r\n\r\n", b"A B C\r\nVia\r\n\r\n", b"x" * 70000]:
        ua.receive(junk, PEER, 0.0)


def test_reinvite_for_hold_is_answered_and_reported() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, tag = answered_call(ua)
    ua.receive(in_dialog("ACK", tag, 1, "z9hG4bKack"), PEER, 0.3)
    hold = OFFER.replace("c=IN IP4 10.0.0.7", "c=IN IP4 10.0.0.7") + "a=sendonly\r\n"
    out = ua.receive(in_dialog("INVITE", tag, 2, "z9hG4bKre", hold), PEER, 2.0)
    [ok] = sent(out)
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert "a=recvonly" in ok.body.decode()
    [changed] = [o for o in out if isinstance(o, MediaChanged)]
    assert changed.media.on_hold


def test_retransmitted_invite_gets_the_last_response_again() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    out = ua.receive(invite(), PEER, 0.0)
    [incoming] = [o for o in out if isinstance(o, IncomingCall)]
    ua.ring(incoming.call)
    again = ua.receive(invite(), PEER, 0.5)
    assert statuses(again) == [180] and not [o for o in again if isinstance(o, IncomingCall)]


def dial(
    ua: UserAgent,
    *,
    to_uri: str,
    from_uri: str,
    target: tuple[str, int],
    media_port: int,
    dtmf_payload_type: int | None = None,
    credentials: tuple[str, str] | None = None,
) -> tuple[Call, list[Output]]:
    """Start an outbound call at time 0 that offers PCMU on 127.0.0.1:`media_port`."""
    body = sdp.build(
        host="127.0.0.1",
        port=media_port,
        session_id=1,
        version=1,
        codecs=[("PCMU", 0)],
        dtmf_payload_type=dtmf_payload_type,
    )
    return ua.invite(
        to_uri=to_uri,
        from_uri=from_uri,
        target=target,
        body=body,
        local_media=("127.0.0.1", media_port),
        now=0.0,
        credentials=credentials,
    )


def header_lines(request: SipRequest, names: tuple[str, ...]) -> list[str]:
    """The header lines of `request` whose names are in `names`, as a far end copies them."""
    head = request.to_bytes().split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    return [h for h in head if h.split(":")[0] in names]


def test_outbound_invite_progress_answer_and_ack() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, out = dial(
        ua,
        to_uri="sip:+15550001111@10.0.0.9:5070",
        from_uri="sip:+15559990000@127.0.0.1",
        target=("10.0.0.9", 5070),
        media_port=30002,
        dtmf_payload_type=101,
    )
    [request] = sent(out)
    assert isinstance(request, SipRequest) and request.method == "INVITE"
    assert [m.method for m in sent(ua.tick(0.5)) if isinstance(m, SipRequest)] == ["INVITE"]

    def reply(status: int, body: str = "") -> bytes:
        keep = header_lines(request, ("Via", "From", "Call-ID", "CSeq"))
        lines = [f"SIP/2.0 {status} X", *keep, "To: <sip:+15550001111@10.0.0.9>;tag=bb"]
        lines += ["Contact: <sip:uas@10.0.0.9:5070>", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    assert [type(o) for o in ua.receive(reply(180), ("10.0.0.9", 5070), 0.6)] == [CallProgress]
    out = ua.receive(reply(200, OFFER.replace("8 0 101", "0 101")), ("10.0.0.9", 5070), 1.0)
    [ack] = sent(out)
    assert (
        isinstance(ack, SipRequest) and ack.method == "ACK" and ack.uri == "sip:uas@10.0.0.9:5070"
    )
    [done] = [o for o in out if isinstance(o, CallAnswered)]
    assert done.media.codec == "PCMU" and done.call.remote_tag == "bb"


def test_outbound_invite_busy_and_no_answer() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, out = dial(ua, to_uri="sip:1@h", from_uri="sip:2@h", target=("h", 5060), media_port=1)
    outputs: list[Output] = []
    while (deadline := ua.next_deadline()) is not None:
        outputs += ua.tick(deadline)
    [failed] = [o for o in outputs if isinstance(o, CallFailed)]
    assert failed.status == 408


def test_outbound_invite_answers_a_digest_challenge_once() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, out = dial(
        ua,
        to_uri="sip:+15550001111@10.0.0.9",
        from_uri="sip:me@127.0.0.1",
        target=PEER,
        media_port=1,
        credentials=("pbx", "s3cret"),
    )
    [request] = sent(out)
    assert isinstance(request, SipRequest)

    def challenge(invite: SipRequest) -> bytes:
        keep = header_lines(invite, ("Via", "From", "To", "Call-ID", "CSeq"))
        lines = ["SIP/2.0 407 Proxy Authentication Required", *keep]
        lines += ['Proxy-Authenticate: Digest realm="carrier", nonce="abc", qop="auth"']
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    ack, retry = sent(ua.receive(challenge(request), PEER, 0.1))
    assert isinstance(ack, SipRequest) and ack.method == "ACK" and ack.branch == request.branch
    assert isinstance(retry, SipRequest) and retry.method == "INVITE"
    assert retry.cseq == (2, "INVITE") and retry.call_id == request.call_id
    fields = digest.params(retry.headers.get("proxy-authorization") or "")
    expected = digest.response(fields, "INVITE", "pbx", "s3cret", fields["uri"])
    assert fields["username"] == "pbx" and fields["response"] == expected
    # A second challenge means the credentials are wrong: the call fails, no third try.
    out = ua.receive(challenge(retry), PEER, 0.2)
    assert [m.method for m in sent(out) if isinstance(m, SipRequest)] == ["ACK"]
    assert [o.status for o in out if isinstance(o, CallFailed)] == [407]


def test_digest_check_of_a_callers_answer() -> None:
    challenge = digest.challenge("voxgate", now=1000.0)
    fields = digest.params(challenge)
    answer = digest.answer(challenge, "INVITE", "sip:+1555@h", "pbx", "s3cret")
    assert digest.verify(answer, "INVITE", "pbx", "s3cret", "voxgate", now=1001.0)
    assert not digest.verify(answer, "INVITE", "pbx", "guess", "voxgate", now=1001.0)
    assert not digest.verify(answer, "INVITE", "pbx", "s3cret", "voxgate", now=2000.0)  # stale
    forged = answer.replace(fields["nonce"], "1000.0000")
    assert not digest.verify(forged, "INVITE", "pbx", "s3cret", "voxgate", now=1001.0)
    assert not digest.verify(None, "INVITE", "pbx", "s3cret", "voxgate")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_no_datagram_raises(data: bytes) -> None:
    UserAgent("127.0.0.1", 5060).receive(data, PEER, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=8), st.integers(0, 2))
def test_no_mutated_message_raises(at: int, junk: bytes, how: int) -> None:
    """Valid messages cut, overwritten or extended anywhere: answered or dropped, never an
    exception, and a later well-formed call still works."""
    ua = UserAgent("127.0.0.1", 5060)
    for message in (invite(), in_dialog("BYE", "x", 2, "z9hG4bKb")):
        i = min(at, len(message))
        mutated = [message[:i], message[:i] + junk + message[i + len(junk) :], message + junk][how]
        ua.receive(mutated, PEER, 0.0)
        ua.tick(100.0)
    out = ua.receive(invite(branch="z9hG4bKfresh", call_id="fresh@x"), PEER, 200.0)
    assert statuses(out) == [100]


def test_a_stranger_with_the_call_id_cannot_end_the_call() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call, tag = answered_call(ua)
    ua.receive(in_dialog("ACK", tag, 1, "z9hG4bKack"), PEER, 0.3)
    forged = in_dialog("BYE", "guessed", 2, "z9hG4bKx")
    assert statuses(ua.receive(forged, ("10.9.9.9", 5060), 1.0)) == [481]
    wrong_from = in_dialog("BYE", tag, 2, "z9hG4bKy").replace(b"tag=aa", b"tag=zz")
    out = ua.receive(wrong_from, ("10.9.9.9", 5060), 1.0)
    assert statuses(out) == [481] and not [o for o in out if isinstance(o, CallEnded)]
    assert statuses(ua.receive(in_dialog("BYE", tag, 2, "z9hG4bKz"), PEER, 2.0)) == [200]


def test_tcp_framing_by_content_length() -> None:
    buffer = bytearray(b"\r\n" + invite() + invite(call_id="c2@x")[:50])
    [first] = take_messages(buffer)
    assert first == invite() and buffer == invite(call_id="c2@x")[:50]
    buffer += invite(call_id="c2@x")[50:] + b"\r\n\r\n"
    assert take_messages(buffer) == [invite(call_id="c2@x")] and not buffer  # CRLFs: keep-alive
    with pytest.raises(StreamError):
        take_messages(bytearray(b"X" * 20000))
    with pytest.raises(StreamError):
        take_messages(bytearray(b"INVITE sip:a SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"))


def test_an_outbound_offer_lists_both_g711_codecs_and_the_answer_picks_one() -> None:
    offer = sdp.build(
        host="127.0.0.1",
        port=30004,
        session_id=1,
        version=1,
        codecs=OUTBOUND_CODECS,
        dtmf_payload_type=101,
    ).decode()
    assert "m=audio 30004 RTP/AVP 0 8 101\r\n" in offer
    assert "a=rtpmap:0 PCMU/8000" in offer and "a=rtpmap:8 PCMA/8000" in offer
    # What the offerer uses is what the answer kept (its first G.711 codec).
    for kept, codec in [("8 101", "PCMA"), ("0 101", "PCMU"), ("8 0 101", "PCMA")]:
        answer = sdp.parse(OFFER.replace("8 0 101", kept))
        assert (answer.codec, answer.dtmf_payload_type) == (codec, 101)
