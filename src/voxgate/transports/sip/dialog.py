"""How an incoming request relates to a dialog the user agent holds (RFC 3261 §12.2.2)."""

from __future__ import annotations

from .events import Call
from .message import SipRequest, tag_of


def same_dialog(call: Call, request: SipRequest) -> bool:
    """Whether an in-dialog request belongs to ``call``: the peer addresses our tag, from
    its own."""
    mine = request.to_tag == call.local_tag
    return mine and (call.remote_tag is None or request.from_tag == call.remote_tag)


def retried(call: Call, request: SipRequest) -> bool:
    """An INVITE that starts over a call we turned down (answering a digest challenge comes
    with the same Call-ID and a new branch)."""
    return (
        call.state == "ended"
        and not call.outbound
        and request.to_tag is None
        and request.branch != call.invite.branch
    )


def without_tag(value: str) -> str:
    tag = tag_of(value)
    return value.replace(f";tag={tag}", "") if tag is not None else value
