"""The user agent's transaction timers over UDP and over TCP (RFC 3261 §17), without sockets:
on a reliable transport nothing is retransmitted (timers A, E, G), timers D, I, J and K are
zero, timers B, F and H still end what gets no answer, and the Via and Contact we write say
TCP. The 2xx to an INVITE is retransmitted on either (§13.3.1.4)."""

from __future__ import annotations

import pytest

from voxgate.transports.sip import sdp
from voxgate.transports.sip.events import (
    Call,
    CallFailed,
    IncomingCall,
    Output,
    RequestDone,
    Send,
)
from voxgate.transports.sip.message import SipRequest, SipResponse, parse
from voxgate.transports.sip.transactions import T1, T4
from voxgate.transports.sip.useragent import UserAgent

PEER = ("10.0.0.7", 5062)
TRUNK = ("10.0.0.9", 5070)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def via(transport: str, branch: str) -> str:
    return f"Via: SIP/2.0/{transport} 10.0.0.7:5062;branch={branch}"


def invite(transport: str) -> bytes:
    return (
        "INVITE sip:+15551234567@voxgate SIP/2.0\r\n"
        f"{via(transport, 'z9hG4bKinv')}\r\n"
        "From: <sip:alice@10.0.0.7>;tag=aa\r\nTo: <sip:+15551234567@voxgate>\r\n"
        "Call-ID: c1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.7:5062>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n{OFFER}"
    ).encode()


def request(method: str, transport: str, branch: str, to_tag: str = "", cseq: int = 1) -> bytes:
    to = "<sip:+15551234567@voxgate>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:voxgate@127.0.0.1:5060 SIP/2.0\r\n{via(transport, branch)}\r\n"
        f"From: <sip:alice@10.0.0.7>;tag=aa\r\nTo: {to}\r\nCall-ID: c1@x\r\n"
        f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def sent(outputs: list[Output]) -> list[SipRequest | SipResponse]:
    return [parse(o.data) for o in outputs if isinstance(o, Send)]


def run_until(ua: UserAgent, end: float) -> list[Output]:
    """Every timer due before ``end``, fired at its own deadline."""
    out: list[Output] = []
    while (deadline := ua.next_deadline()) is not None and deadline < end:
        out += ua.tick(deadline)
    return out


def incoming(ua: UserAgent, reliable: bool) -> Call:
    out = ua.receive(invite("TCP" if reliable else "UDP"), PEER, 0.0, reliable=reliable)
    [event] = [o for o in out if isinstance(o, IncomingCall)]
    return event.call


def answer(ua: UserAgent, call: Call) -> SipResponse:
    body = sdp.answer(sdp.parse(OFFER), host="127.0.0.1", port=30000, session_id=1, version=1)
    [ok] = sent(ua.answer(call, body, ("127.0.0.1", 30000), 0.1))
    assert isinstance(ok, SipResponse) and ok.status == 200
    return ok


def outbound(ua: UserAgent, reliable: bool) -> tuple[Call, SipRequest]:
    body = sdp.build(
        host="127.0.0.1", port=30002, session_id=1, version=1, codecs=[("PCMU", 0)],
        dtmf_payload_type=101,
    )  # fmt: skip
    call, out = ua.invite(
        to_uri="sip:+15550001111@10.0.0.9:5070",
        from_uri="sip:+15559990000@127.0.0.1",
        target=TRUNK,
        body=body,
        local_media=("127.0.0.1", 30002),
        now=0.0,
        reliable=reliable,
    )
    [sent_invite] = sent(out)
    assert isinstance(sent_invite, SipRequest)
    return call, sent_invite


def failure(to: SipRequest, status: int) -> bytes:
    """The trunk's final non-2xx answer to our INVITE ``to``."""
    keep = [f"{n}: {to.headers.get(n)}" for n in ("Via", "From", "Call-ID", "CSeq")]
    lines = [f"SIP/2.0 {status} Busy Here", *keep, "To: <sip:+15550001111@10.0.0.9>;tag=bb"]
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_what_we_write_names_the_calls_transport(reliable: bool) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call = incoming(ua, reliable)
    ok = answer(ua, call)
    ua.receive(
        request("ACK", "TCP" if reliable else "UDP", "z9hG4bKack", call.local_tag), PEER, 0.2
    )
    contact = ok.headers.get("contact") or ""
    assert contact.endswith(";transport=tcp>") is reliable
    [bye] = sent(ua.hangup(call, 1.0))
    assert (bye.headers.get("via") or "").startswith("SIP/2.0/TCP " if reliable else "SIP/2.0/UDP ")
    _, out_invite = outbound(UserAgent("127.0.0.1", 5060), reliable)
    assert (out_invite.headers.get("via") or "").startswith(
        f"SIP/2.0/{'TCP' if reliable else 'UDP'} "
    )


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_a_bye_is_retransmitted_over_udp_only_and_times_out_on_either(reliable: bool) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call = incoming(ua, reliable)
    answer(ua, call)
    ua.receive(request("ACK", "UDP", "z9hG4bKack", call.local_tag), PEER, 0.2)
    ua.hangup(call, 1.0)
    out = run_until(ua, 1.0 + 64 * T1 + 1)
    byes = [m for m in sent(out) if isinstance(m, SipRequest) and m.method == "BYE"]
    assert (len(byes) == 0) is reliable  # timer E: UDP retransmits, TCP never
    if not reliable:
        assert len(byes) >= 5
    # Timer F ends the transaction on both.
    assert [(o.method, o.status) for o in out if isinstance(o, RequestDone)] == [("BYE", 408)]


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_a_rejection_is_retransmitted_over_udp_only_and_forgotten_after_timer_i(
    reliable: bool,
) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call = incoming(ua, reliable)
    assert [m.status for m in sent(ua.reject(call, 486, 0.1)) if isinstance(m, SipResponse)] == [
        486
    ]
    resent = [m for m in sent(run_until(ua, 3.0)) if isinstance(m, SipResponse)]
    assert (resent == []) is reliable  # timer G
    ua.receive(
        request("ACK", "TCP" if reliable else "UDP", "z9hG4bKinv", call.local_tag), PEER, 3.0
    )
    # Timer I: the call is kept T4 after the ACK over UDP (to absorb its retransmissions),
    # and not at all over TCP.
    ua.tick(3.0)
    assert ("c1@x" in ua.calls) is not reliable
    ua.tick(3.0 + T4)
    assert "c1@x" not in ua.calls and ua.next_deadline() is None


def test_a_rejection_nobody_acks_is_given_up_at_timer_h_over_tcp() -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call = incoming(ua, reliable=True)
    ua.reject(call, 486, 0.1)
    assert sent(run_until(ua, 0.1 + 64 * T1 + 1)) == []
    assert "c1@x" not in ua.calls and ua.next_deadline() is None


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_the_2xx_is_retransmitted_until_the_ack_on_either_transport(reliable: bool) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    call = incoming(ua, reliable)
    answer(ua, call)
    assert [m.status for m in sent(ua.tick(0.1 + T1)) if isinstance(m, SipResponse)] == [200]


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_answers_to_other_requests_are_kept_for_timer_j_over_udp_only(reliable: bool) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    transport = "TCP" if reliable else "UDP"
    options = request("OPTIONS", transport, "z9hG4bKopt")
    [first] = sent(ua.receive(options, PEER, 0.0, reliable=reliable))
    [again] = sent(ua.receive(options, PEER, 1.0, reliable=reliable))
    # Over UDP the same request gets the very response kept for it (the same To tag); over
    # TCP there is no retransmission to answer, so nothing was kept and it is answered anew.
    assert (first.to_tag == again.to_tag) is not reliable


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_an_outbound_invite_retransmits_over_udp_only_and_fails_at_timer_b(
    reliable: bool,
) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    outbound(ua, reliable)
    out = run_until(ua, 64 * T1 + 1)
    invites = [m for m in sent(out) if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert (invites == []) is reliable  # timer A
    assert [o.status for o in out if isinstance(o, CallFailed)] == [408]  # timer B


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "tcp"])
def test_a_retransmitted_failure_is_acked_again_within_timer_d_over_udp(reliable: bool) -> None:
    ua = UserAgent("127.0.0.1", 5060)
    _, sent_invite = outbound(ua, reliable)
    busy = failure(sent_invite, 486)
    out = ua.receive(busy, TRUNK, 0.2, reliable=reliable)
    assert [m.method for m in sent(out) if isinstance(m, SipRequest)] == ["ACK"]
    assert [o.status for o in out if isinstance(o, CallFailed)] == [486]
    # The trunk did not get our ACK and sends the 486 again: ACKed again (UDP, timer D), and
    # the call is not failed twice.
    again = ua.receive(busy, TRUNK, 2.0, reliable=reliable)
    assert [m.method for m in sent(again) if isinstance(m, SipRequest)] == (
        [] if reliable else ["ACK"]
    )
    assert not [o for o in again if isinstance(o, CallFailed)]
    ua.tick(40.0)
    assert sent(ua.receive(busy, TRUNK, 40.0)) == []  # after timer D: nothing kept
