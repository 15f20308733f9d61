"""Requests the user agent derives from an INVITE of its own: the ACK of a non-2xx final
response and the CANCEL (both on the INVITE's branch, RFC 3261 §17.1.1.3 and §9.1)."""

from __future__ import annotations

from .message import Headers, SipRequest, SipResponse


def ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    headers = Headers()
    headers.add("Via", invite.headers.get("via") or "")
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("from") or "")
    headers.add("To", response.headers.get("to") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return SipRequest(headers, b"", method="ACK", uri=invite.uri)


def cancel_request(invite: SipRequest) -> SipRequest:
    headers = Headers()
    headers.add("Via", invite.headers.get("via") or "")
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("from") or "")
    headers.add("To", invite.headers.get("to") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
    return SipRequest(headers, b"", method="CANCEL", uri=invite.uri)
