"""The SIP user agent, sans-IO: datagrams and the time go in (`receive`, `tick`); datagrams to
send and call events come out. No sockets, no loop, no clock of its own: the caller passes
``now`` (seconds, monotonic) and asks `next_deadline` when to call `tick` next.

Rules (the RFC 3261 subset that docs/telephony.md writes down):
- One dialog per Call-ID (no forking). Requests within a dialog go to the address the dialog's
  peer sent from (symmetric signalling, what NAT needs), not to its Contact.
- Transport. Each message comes in over a reliable transport (TCP) or not (UDP); a call keeps
  the transport of the request that made it. Its transaction timers follow that (the table in
  `transactions.py`: on TCP nothing is retransmitted and timers D, I, J, K are zero), and the
  Via and Contact we write name it.
- Server side. A new INVITE gets 100 Trying and an `IncomingCall`; the application then rings,
  answers (200 with SDP, retransmitted from T1 doubling to T2 until the ACK on any transport;
  no ACK within 64·T1 ends the call with BYE) or rejects (final status retransmitted on timer G
  until the ACK over UDP, given up at timer H; the call is forgotten timer I after the ACK).
  A retransmitted request gets the last response again. CANCEL before the answer: 200 to the
  CANCEL, 487 to the INVITE. BYE: 200 and `CallEnded`. A re-INVITE is answered here (the same
  codec, the mirrored direction) and reported as `MediaChanged` (hold/unhold). OPTIONS: 200.
  Other methods: 405; requests for an unknown dialog: 481.
- Client side (BYE, REFER, outbound INVITE): retransmitted on timers E/A from T1 over UDP,
  given up at timer F/B (64·T1); the ACK of a failed INVITE is sent again for a retransmitted
  failure within timer D. Responses to an outbound INVITE: 1xx → `CallProgress`, 2xx → ACK and
  `CallAnswered`, final non-2xx → ACK and `CallFailed`.
- A message that does not parse gets 400 if its headers say where a reply would go, and is
  dropped otherwise; nothing a peer sends raises out of `receive`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from dataclasses import dataclass

from . import sdp
from .dialog import retried, same_dialog, without_tag
from .events import (
    Addr,
    Call,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    MediaChanged,
    Output,
    RequestDone,
    Send,
)
from .message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    bad_request_for,
    host_port_of,
    parse,
    reason_for,
    response_to,
    uri_of,
)
from .requests import ack_for_failure, authenticated_invite, cancel_request, initial_invite
from .transactions import T1, T2, Fire, Remembered, Timers, rules_for

log = logging.getLogger(__name__)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER"


@dataclass
class _ClientTxn:
    request: SipRequest
    call: Call
    addr: Addr
    interval: float
    final: int | None = None


class UserAgent:
    def __init__(self, host: str, port: int, *, user_agent: str = "voxgate") -> None:
        self.host, self.port = host, port
        self.user_agent = user_agent
        self.calls: dict[str, Call] = {}
        self._timers = Timers()
        self._client: dict[str, _ClientTxn] = {}
        # Final responses to non-INVITE requests, for their retransmissions (timer J), and the
        # ACKs of failed outbound INVITEs, for retransmitted failures (timer D).
        self._answered: Remembered[SipResponse] = Remembered()
        self._acks: Remembered[Send] = Remembered()
        self._ids = itertools.count(1)

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def tick(self, now: float) -> list[Output]:
        out = self._timers.run_due(now)
        self._answered.expire(now)
        self._acks.expire(now)
        return out

    def timers(self, *prefix: str) -> list[tuple[str, ...]]:
        """The timers set under ``prefix`` (("call", call id) or ("tx", branch))."""
        return self._timers.pending(*prefix)

    def _at(self, key: tuple[str, ...], deadline: float, fire: Fire) -> None:
        self._timers.at(key, deadline, fire)

    def _cancel_timers(self, *prefix: str) -> None:
        self._timers.cancel(*prefix)

    # -- input -----------------------------------------------------------------------------

    def receive(
        self, data: bytes, source: Addr, now: float, *, reliable: bool = False
    ) -> list[Output]:
        """One message from ``source``; ``reliable``: it came over TCP (RFC 3261 §18)."""
        if not data.strip():  # keep-alive CRLFs (RFC 5626)
            return []
        try:
            message = parse(data)
        except SipParseError as exc:
            log.info("malformed SIP message from %s:%d: %s", *source, exc)
            reply = bad_request_for(data, str(exc))
            return [Send(reply, source)] if reply is not None else []
        try:
            if isinstance(message, SipRequest):
                return self._request(message, source, now, reliable)
            return self._response(message, now)
        except (ValueError, KeyError, IndexError) as exc:  # a header we could not act on
            log.info("SIP message from %s:%d not handled: %s", *source, exc)
            if isinstance(message, SipRequest) and message.method != "ACK":
                return [self._reply(message, source, 400, str(exc)[:80])]
            return []

    def _request(
        self, request: SipRequest, source: Addr, now: float, reliable: bool
    ) -> list[Output]:
        key = (request.branch, request.method)
        again = self._answered.get(key, now)
        if request.method not in ("ACK", "INVITE") and again is not None:
            return [Send(again.to_bytes(), source)]
        keep = now + rules_for(reliable).timer_j  # final responses kept for retransmissions
        call = self.calls.get(request.call_id)
        if call is not None and request.to_tag is not None and not same_dialog(call, request):
            call = None  # the Call-ID of one of our calls, but not its dialog: a stranger's
        match request.method:
            case "INVITE" if call is None and request.to_tag is not None:
                return [self._reply(request, source, 481)]
            case "INVITE" if call is None or retried(call, request):
                if call is not None:  # a new attempt after our 401: the old one is done
                    self._cancel_timers("call", call.id)
                return self._new_invite(request, source, reliable)
            case "INVITE" if call is not None and call.invite.branch == request.branch:
                resend = call.last_response
                return [Send(resend.to_bytes(), source)] if resend is not None else []
            case "INVITE" if call is not None and request.to_tag is not None:
                return self._reinvite(call, request, source, now, keep)
            case "INVITE":  # a new INVITE reusing the Call-ID of a call in progress
                return [self._reply(request, source, 482, "Loop Detected (Call-ID in use)")]
            case "ACK":
                return self._ack(call, request, now)
            case "CANCEL":
                return self._cancel(call, request, source, now, keep)
            case "BYE" if call is not None and call.state != "ended":
                self._end(call, now)
                out: list[Output] = [self._final(request, source, 200, now, keep, call)]
                return [*out, CallEnded(call, "remote_bye")]
            case "OPTIONS":
                response = self._response_for(request, 200, call)
                response.headers.add("Allow", ALLOW)
                response.headers.add("Accept", "application/sdp")
                return [self._remember(request, response, source, now, keep)]
            case "NOTIFY" | "INFO" if call is not None:
                return [self._final(request, source, 200, now, keep, call)]
            case "BYE" | "NOTIFY" | "INFO" | "REFER" | "UPDATE" | "PRACK":
                return [self._final(request, source, 481, now, keep, call)]
            case _:
                response = self._response_for(request, 405, call)
                response.headers.add("Allow", ALLOW)
                return [self._remember(request, response, source, now, keep)]

    def _new_invite(self, request: SipRequest, source: Addr, reliable: bool) -> list[Output]:
        if request.to_tag is not None:  # a re-INVITE for a dialog we do not know
            return [self._reply(request, source, 481)]
        contact = request.headers.get("contact")
        call = Call(
            id=request.call_id,
            outbound=False,
            peer=source,
            local_tag=secrets.token_hex(6),
            remote_tag=request.from_tag,
            local_uri=request.headers.get("to") or "",
            remote_uri=request.headers.get("from") or "",
            remote_target=uri_of(contact) if contact else uri_of(request.headers.get("from") or ""),
            invite=request,
            reliable=reliable,
        )
        self.calls[call.id] = call
        trying = response_to(request, 100, "Trying")
        call.last_response = trying
        return [Send(trying.to_bytes(), source), IncomingCall(call, source)]

    def _reinvite(
        self, call: Call, request: SipRequest, source: Addr, now: float, keep: float
    ) -> list[Output]:
        if call.state != "confirmed" or call.media is None or call.local_media is None:
            response = self._response_for(request, 491 if call.state != "ended" else 481, call)
            return [self._remember(request, response, source, now, keep)]
        try:
            offer = sdp.parse(request.body) if request.body else call.media
        except sdp.SdpError as exc:
            return [self._final(request, source, 488, now, keep, call, str(exc)[:80])]
        call.sdp_version += 1
        call.media = offer
        call.invite = request
        body = sdp.answer(
            offer,
            host=call.local_media[0],
            port=call.local_media[1],
            session_id=id(call) & 0xFFFFFFFF,
            version=call.sdp_version,
        )
        call.state = "answered"
        return [*self._send_2xx(call, body, now), MediaChanged(call, offer)]

    def _ack(self, call: Call | None, request: SipRequest, now: float) -> list[Output]:
        if call is None:
            return []
        rejected = call.last_response is not None and call.last_response.status >= 300
        if request.branch == call.invite.branch or rejected:  # the ACK of a non-2xx final
            if self._timers.pending("call", call.id, "g"):  # the first ACK: timer I begins
                self._cancel_timers("call", call.id, "g")
                forget_at = now + rules_for(call.reliable).timer_i
                self._at(("call", call.id, "i"), forget_at, lambda at: self._forget(call))
            return []
        if call.state == "answered":
            self._cancel_timers("call", call.id, "2xx")
            call.state = "confirmed"
            return [CallConfirmed(call)]
        return []

    def _cancel(
        self, call: Call | None, request: SipRequest, source: Addr, now: float, keep: float
    ) -> list[Output]:
        if call is None or call.invite.branch != request.branch or call.outbound:
            return [self._final(request, source, 481, now, keep, None)]
        out: list[Output] = [self._final(request, source, 200, now, keep, call)]
        if call.state != "proceeding":  # answered already: the CANCEL changes nothing
            return out
        out += self._reject_invite(call, 487, now)
        return [*out, CallEnded(call, "cancelled")]

    def _response(self, response: SipResponse, now: float) -> list[Output]:
        txn = self._client.get(response.branch)
        if txn is None:
            ack = self._acks.get((response.branch, "ACK"), now)
            if ack is not None and response.status >= 300:  # our ACK of a failure was lost
                return [ack]
            call = self.calls.get(response.call_id)
            number, method = response.cseq
            retransmitted_2xx = 200 <= response.status < 300 and method == "INVITE"
            if call is not None and call.outbound and retransmitted_2xx:  # our ACK was lost
                return [self._send_ack(call, number)]
            return []
        if response.status < 200:
            if txn.request.method == "INVITE":
                self._cancel_timers("tx", response.branch, "retransmit")
                if response.status > 100:
                    return [CallProgress(txn.call, response.status)]
            return []
        if txn.final is not None:
            return []
        txn.final = response.status
        self._cancel_timers("tx", response.branch)
        del self._client[response.branch]
        if txn.request.method == "INVITE":
            return self._invite_final(txn, response, now)
        return [RequestDone(txn.call, txn.request.method, response.status)]

    # -- server side: what the application decides ----------------------------------------

    def ring(self, call: Call) -> list[Output]:
        if call.state != "proceeding":
            return []
        ringing = self._response_for(call.invite, 180, call)
        call.last_response = ringing
        return [Send(ringing.to_bytes(), call.peer)]

    def answer(self, call: Call, body: bytes, local_media: Addr, now: float) -> list[Output]:
        """200 OK with the SDP answer ``body``; retransmitted until the ACK."""
        if call.state != "proceeding":
            return []
        call.local_media = local_media
        call.media = sdp.parse(call.invite.body)
        call.state = "answered"
        return self._send_2xx(call, body, now)

    def reject(
        self,
        call: Call,
        status: int,
        now: float,
        reason: str = "",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[Output]:
        if call.state != "proceeding":
            return []
        out = self._reject_invite(call, status, now, reason, headers)
        return [*out, CallEnded(call, "rejected")]

    def _send_2xx(self, call: Call, body: bytes, now: float) -> list[Output]:
        ok = self._response_for(call.invite, 200, call)
        ok.headers.add("Contact", self._contact(call.reliable))
        ok.headers.add("Allow", ALLOW)
        ok.headers.add("Content-Type", "application/sdp")
        ok.body = body
        call.last_response = ok
        self._retransmit_2xx(call, now, T1)
        return [Send(ok.to_bytes(), call.peer)]

    def _retransmit_2xx(self, call: Call, now: float, interval: float) -> None:
        started = now

        def fire(at: float) -> list[Output]:
            if call.state != "answered" or call.last_response is None:
                return []
            if at - started >= 64 * T1 - interval:  # timer H for the 2xx: no ACK came
                return [*self.hangup(call, at), CallEnded(call, "no_ack")]
            self._at(("call", call.id, "2xx"), at + min(interval * 2, T2), fire)
            return [Send(call.last_response.to_bytes(), call.peer)]

        self._at(("call", call.id, "2xx"), now + interval, fire)

    def _reject_invite(
        self,
        call: Call,
        status: int,
        now: float,
        why: str = "",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[Output]:
        response = self._response_for(call.invite, status, call, why)
        for name, value in headers:
            response.headers.add(name, value)
        call.last_response = response
        call.state = "ended"
        rules = rules_for(call.reliable)
        interval = T1

        def fire(at: float) -> list[Output]:  # timer G until the ACK; timer H gives up
            nonlocal interval
            if at - now >= rules.timeout:
                self._forget(call)
                return []
            if not rules.retransmits:  # over TCP the "g" timer is timer H alone
                self._at(("call", call.id, "g"), now + rules.timeout, fire)
                return []
            interval = min(interval * 2, T2)
            self._at(("call", call.id, "g"), at + interval, fire)
            return [Send(response.to_bytes(), call.peer)]

        first = now + (interval if rules.retransmits else rules.timeout)
        self._at(("call", call.id, "g"), first, fire)
        return [Send(response.to_bytes(), call.peer)]

    # -- either side: in-dialog requests ---------------------------------------------------

    def hangup(self, call: Call, now: float) -> list[Output]:
        """BYE for an answered call, CANCEL for an outbound one still ringing."""
        if call.state == "ended":
            return []
        if call.outbound and call.state == "proceeding":
            call.state = "ended"
            cancel = cancel_request(call.invite)
            return self._start_client(call, cancel, now)
        self._end(call, now)
        return self._start_client(call, self._in_dialog("BYE", call), now)

    def refer(self, call: Call, target_uri: str, now: float) -> list[Output]:
        request = self._in_dialog("REFER", call)
        request.headers.add("Refer-To", f"<{target_uri}>")
        request.headers.add("Referred-By", f"<{uri_of(call.local_uri)}>")
        return self._start_client(call, request, now)

    def _end(self, call: Call, now: float) -> None:
        call.state = "ended"
        self._cancel_timers("call", call.id)
        # Keep the dialog a while so retransmitted BYEs and late ACKs still match it.
        self._at(("call", call.id, "drop"), now + 64 * T1, lambda at: self._forget(call))

    def _forget(self, call: Call) -> list[Output]:
        if self.calls.get(call.id) is call:
            del self.calls[call.id]
        self._cancel_timers("call", call.id)
        return []

    # -- client side: outbound calls -------------------------------------------------------

    def invite(
        self,
        *,
        to_uri: str,
        from_uri: str,
        target: Addr,
        body: bytes,
        local_media: Addr,
        now: float,
        credentials: tuple[str, str] | None = None,
        reliable: bool = False,
    ) -> tuple[Call, list[Output]]:
        call_id = f"{secrets.token_hex(10)}@{self.host}"
        local = f"<{from_uri}>"
        local_tag = secrets.token_hex(6)
        request = initial_invite(
            to_uri,
            f"{local};tag={local_tag}",
            call_id,
            body,
            via=self._via(reliable),
            contact=self._contact(reliable),
            extra=(("Allow", ALLOW), ("User-Agent", self.user_agent)),
        )
        call = Call(
            id=call_id,
            outbound=True,
            peer=target,
            local_tag=local_tag,
            remote_tag=None,
            local_uri=local,
            remote_uri=f"<{to_uri}>",
            remote_target=to_uri,
            invite=request,
            local_media=local_media,
            reliable=reliable,
        )
        call.local_cseq = 1
        if credentials is not None:
            call.context["credentials"] = credentials
        self.calls[call_id] = call
        return call, self._start_client(call, request, now)

    def _invite_final(self, txn: _ClientTxn, response: SipResponse, now: float) -> list[Output]:
        call = txn.call
        number, _ = response.cseq
        if response.status in (401, 407) and call.state != "ended":
            retry = self._authenticated(call, response)
            if retry is not None:
                ack = ack_for_failure(txn.request, response)
                return [Send(ack.to_bytes(), txn.addr), *self._start_client(call, retry, now)]
        if response.status >= 300 or call.state == "ended":
            ack = ack_for_failure(txn.request, response)
            if response.status < 300:  # answered after we gave up: take it and hang up
                call.remote_tag = response.to_tag
                call.state = "confirmed"
                return [self._send_ack(call, number), *self.hangup(call, now)]
            call.state = "ended"
            self._forget(call)
            sent = Send(ack.to_bytes(), txn.addr)
            until = now + rules_for(call.reliable).timer_d
            self._acks.keep((response.branch, "ACK"), sent, until, now)
            return [sent, CallFailed(call, response.status, response.reason)]
        call.remote_tag = response.to_tag
        if (contact := response.headers.get("contact")) is not None:
            call.remote_target = uri_of(contact)
        try:
            call.media = sdp.parse(response.body)
        except sdp.SdpError as exc:
            call.state = "confirmed"
            return [
                self._send_ack(call, number),
                *self.hangup(call, now),
                CallFailed(call, 488, str(exc)),
            ]
        call.state = "confirmed"
        return [self._send_ack(call, number), CallAnswered(call, call.media)]

    def _authenticated(self, call: Call, challenge: SipResponse) -> SipRequest | None:
        """The INVITE again with an answer to the provider's digest challenge (once)."""
        credentials = call.context.get("credentials")
        if not isinstance(credentials, tuple) or call.context.get("auth_tried"):
            return None
        call.context["auth_tried"] = True
        retry = authenticated_invite(call.invite, challenge, credentials, self._via(call.reliable))
        if retry is not None:
            call.local_cseq, call.invite = retry.cseq[0], retry
        return retry

    def _send_ack(self, call: Call, number: int) -> Send:
        ack = self._in_dialog("ACK", call, cseq=number)
        return Send(ack.to_bytes(), call.peer)

    def _start_client(self, call: Call, request: SipRequest, now: float) -> list[Output]:
        branch = request.branch
        txn = _ClientTxn(request, call, call.peer, T1)
        self._client[branch] = txn
        invite = request.method == "INVITE"
        rules = rules_for(call.reliable)

        def retransmit(at: float) -> list[Output]:
            txn.interval = txn.interval * 2 if invite else min(txn.interval * 2, T2)
            self._at(("tx", branch, "retransmit"), at + txn.interval, retransmit)
            return [Send(request.to_bytes(), txn.addr)]

        def give_up(at: float) -> list[Output]:  # timer B / F
            self._cancel_timers("tx", branch)
            self._client.pop(branch, None)
            if invite:
                call.state = "ended"
                self._forget(call)
                return [CallFailed(call, 408, "no response")]
            return [RequestDone(call, request.method, 408)]

        if rules.retransmits:  # timer A / E
            self._at(("tx", branch, "retransmit"), now + T1, retransmit)
        self._at(("tx", branch, "timeout"), now + rules.timeout, give_up)
        return [Send(request.to_bytes(), txn.addr)]

    # -- building messages -----------------------------------------------------------------

    def _via(self, reliable: bool) -> str:
        transport = "TCP" if reliable else "UDP"
        branch = f"z9hG4bK{secrets.token_hex(8)}"
        return f"SIP/2.0/{transport} {self.host}:{self.port};branch={branch};rport"

    def _contact(self, reliable: bool) -> str:
        # Over TCP the peer's requests in the dialog must come back over TCP (§18.1.1).
        return f"<sip:voxgate@{self.host}:{self.port}{';transport=tcp' if reliable else ''}>"

    def _in_dialog(self, method: str, call: Call, cseq: int | None = None) -> SipRequest:
        if cseq is None:
            call.local_cseq = max(call.local_cseq, call.invite.cseq[0] if call.outbound else 0) + 1
            cseq = call.local_cseq
        headers = Headers()
        headers.add("Via", self._via(call.reliable))
        headers.add("Max-Forwards", "70")
        local = f"{without_tag(call.local_uri)};tag={call.local_tag}"
        remote = without_tag(call.remote_uri)
        if call.remote_tag:
            remote += f";tag={call.remote_tag}"
        headers.add("From", local)
        headers.add("To", remote)
        headers.add("Call-ID", call.id)
        headers.add("CSeq", f"{cseq} {method}")
        headers.add("Contact", self._contact(call.reliable))
        return SipRequest(headers, b"", method=method, uri=call.remote_target)

    def _response_for(
        self, request: SipRequest, status: int, call: Call | None, why: str = ""
    ) -> SipResponse:
        tag = call.local_tag if call is not None and not call.outbound else secrets.token_hex(6)
        response = response_to(request, status, why or reason_for(status), to_tag=tag)
        response.headers.add("Server", self.user_agent)
        return response

    def _reply(self, request: SipRequest, source: Addr, status: int, why: str = "") -> Send:
        return Send(self._response_for(request, status, None, why).to_bytes(), source)

    def _final(
        self,
        request: SipRequest,
        source: Addr,
        status: int,
        now: float,
        keep: float,
        call: Call | None,
        why: str = "",
    ) -> Send:
        response = self._response_for(request, status, call, why)
        return self._remember(request, response, source, now, keep)

    def _remember(
        self, request: SipRequest, response: SipResponse, source: Addr, now: float, keep: float
    ) -> Send:
        """Send ``response`` and keep it until ``keep`` for the request's retransmissions."""
        self._answered.keep((request.branch, request.method), response, keep, now)
        return Send(response.to_bytes(), source)

    def target_of(self, uri: str) -> Addr:
        return host_port_of(uri)
