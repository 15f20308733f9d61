"""What the SIP user agent hands its driver: the dialogs (`Call`), datagrams to send, and call
events."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import sdp
from .message import SipRequest, SipResponse

Addr = tuple[str, int]


@dataclass
class Call:
    """One dialog (inbound or outbound) and the transaction state it needs."""

    id: str
    outbound: bool
    peer: Addr
    local_tag: str
    remote_tag: str | None
    local_uri: str  # our From (outbound) / To (inbound) header value, without the tag
    remote_uri: str
    remote_target: str  # the peer's Contact URI: the Request-URI of in-dialog requests
    invite: SipRequest
    state: str = "proceeding"  # proceeding | answered | confirmed | ended
    local_cseq: int = 0
    media: sdp.MediaOffer | None = None
    local_media: Addr | None = None  # our RTP address, for answering re-INVITEs
    sdp_version: int = 1
    last_response: SipResponse | None = None
    # Whether the call's signalling travels over a reliable transport (TCP): its transaction
    # timers follow (transactions.py), and the Via and Contact we send say so.
    reliable: bool = False
    # Anything the application keeps with the call (its session, its route).
    context: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    data: bytes
    addr: Addr


@dataclass(frozen=True)
class IncomingCall:
    call: Call
    source: Addr


@dataclass(frozen=True)
class CallConfirmed:
    call: Call


@dataclass(frozen=True)
class CallEnded:
    call: Call
    reason: str  # remote_bye | cancelled | no_ack | local_bye | rejected


@dataclass(frozen=True)
class MediaChanged:
    call: Call
    media: sdp.MediaOffer


@dataclass(frozen=True)
class CallProgress:
    call: Call
    status: int


@dataclass(frozen=True)
class CallAnswered:
    call: Call
    media: sdp.MediaOffer


@dataclass(frozen=True)
class CallFailed:
    call: Call
    status: int  # the final SIP status, or 408 when no answer came at all
    reason: str


@dataclass(frozen=True)
class RequestDone:
    """A client transaction (BYE, REFER) ended: its final status, 408 on timeout."""

    call: Call
    method: str
    status: int


Output = (
    Send
    | IncomingCall
    | CallConfirmed
    | CallEnded
    | MediaChanged
    | CallProgress
    | CallAnswered
    | CallFailed
    | RequestDone
)
