"""Requests the user agent builds for its outbound calls: the INVITE itself, the ACK of a
non-2xx final response and the CANCEL (both on the INVITE's branch, RFC 3261 §17.1.1.3 and
§9.1), and the INVITE again with an answer to a digest challenge (§22.2)."""

from __future__ import annotations

from . import digest
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


def authenticated_invite(
    invite: SipRequest, challenge: SipResponse, credentials: tuple[object, ...], via: str
) -> SipRequest | None:
    """``invite`` with the next CSeq, a new branch (``via``) and the credentials' answer to
    the 401/407 ``challenge``; None when the challenge carries no digest header."""
    proxy = challenge.status == 407
    value = challenge.headers.get("proxy-authenticate" if proxy else "www-authenticate")
    if value is None or len(credentials) != 2:
        return None
    user, password = (str(c) for c in credentials)
    headers = invite.headers.copy()
    headers.set("Via", via)
    headers.set("CSeq", f"{invite.cseq[0] + 1} INVITE")
    answer = digest.answer(value, "INVITE", invite.uri, user, password)
    headers.set("Proxy-Authorization" if proxy else "Authorization", answer)
    return SipRequest(headers, invite.body, method="INVITE", uri=invite.uri)


def initial_invite(
    to_uri: str,
    from_: str,
    call_id: str,
    body: bytes,
    *,
    via: str,
    contact: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> SipRequest:
    """A new call's INVITE to ``to_uri`` (CSeq 1) from ``from_`` (with its tag), offering
    the SDP ``body``."""
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    headers.add("From", from_)
    headers.add("To", f"<{to_uri}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", contact)
    for name, value in extra:
        headers.add(name, value)
    headers.add("Content-Type", "application/sdp")
    return SipRequest(headers, body, method="INVITE", uri=to_uri)
