"""SDP offer/answer for phone audio (RFC 3264 subset): one audio stream, G.711 (PCMU/PCMA at
8 kHz) and RFC 4733 ``telephone-event/8000``. Anything else in the offer is declined by
leaving it out of the answer; an offer with no G.711 is refused (488)."""

from __future__ import annotations

from dataclasses import dataclass

# Static payload types of RFC 3551.
STATIC = {0: "PCMU", 8: "PCMA"}
DEFAULT_DTMF_PT = 101


class SdpError(ValueError):
    """The offer cannot be answered; the message says why (sent as a 488 reason)."""


@dataclass(frozen=True)
class MediaOffer:
    """What the far end offered (or answered): where to send RTP, the codec chosen from its
    list, its telephone-event payload type, and the stream direction."""

    host: str
    port: int
    codec: str  # "PCMU" | "PCMA"
    payload_type: int
    dtmf_payload_type: int | None
    direction: str  # sendrecv | sendonly | recvonly | inactive

    @property
    def on_hold(self) -> bool:
        return self.direction in ("sendonly", "inactive") or self.host == "0.0.0.0"


def parse(sdp: bytes | str) -> MediaOffer:
    """The first audio stream of an SDP body, with the first G.711 codec it lists."""
    text = sdp.decode("utf-8", "replace") if isinstance(sdp, bytes) else sdp
    session_host, media_host = "", ""
    port, formats, in_audio, seen_audio = -1, list[int](), False, False
    rtpmap: dict[int, str] = {}
    direction = "sendrecv"
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            in_audio = value.startswith("audio ") and not seen_audio
            if in_audio:
                seen_audio = True
                port, formats = _media_line(value)
        elif kind == "c":
            host = _connection_host(value)
            if in_audio:
                media_host = host
            elif not seen_audio:
                session_host = host
        elif kind == "a" and (in_audio or not seen_audio):
            direction = _attribute(value, rtpmap, direction)
    if not seen_audio:
        raise SdpError("the offer has no audio stream")
    return _choose(media_host or session_host, port, formats, rtpmap, direction)


def _media_line(value: str) -> tuple[int, list[int]]:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise SdpError("malformed m= line")
    return int(parts[1].split("/")[0]), [int(p) for p in parts[3:] if p.isdigit()]


def _connection_host(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("malformed c= line")
    return parts[2].split("/")[0]


def _attribute(value: str, rtpmap: dict[int, str], direction: str) -> str:
    if value in ("sendrecv", "sendonly", "recvonly", "inactive"):
        return value
    if value.startswith("rtpmap:"):
        pt, _, encoding = value[7:].partition(" ")
        if pt.isdigit():
            rtpmap[int(pt)] = encoding.strip()
    return direction


def _choose(
    host: str, port: int, formats: list[int], rtpmap: dict[int, str], direction: str
) -> MediaOffer:
    if not host:
        raise SdpError("the offer has no c= connection address")
    if not 0 <= port <= 65535:
        raise SdpError("the audio port is out of range")
    codec: tuple[str, int] | None = None
    dtmf: int | None = None
    for pt in formats:
        name = rtpmap.get(pt, STATIC.get(pt, "")).split("/")[0].upper()
        rate = rtpmap.get(pt, "x/8000").split("/")[1] if "/" in rtpmap.get(pt, "x/8000") else ""
        if codec is None and name in ("PCMU", "PCMA") and rate == "8000":
            codec = (name, pt)
        elif dtmf is None and name == "TELEPHONE-EVENT" and rate == "8000":
            dtmf = pt
    if codec is None:
        raise SdpError("the offer has no PCMU or PCMA 8 kHz audio")
    return MediaOffer(host, port, codec[0], codec[1], dtmf, direction)


def answer_direction(offered: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}.get(
        offered, "sendrecv"
    )


def build(
    *,
    host: str,
    port: int,
    session_id: int,
    version: int,
    codecs: list[tuple[str, int]],
    dtmf_payload_type: int | None,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP body offering (or answering with) ``codecs`` on ``host:port``."""
    pts = [pt for _, pt in codecs] + ([dtmf_payload_type] if dtmf_payload_type is not None else [])
    lines = [
        "v=0",
        f"o=voxgate {session_id} {version} IN IP4 {host}",
        "s=voxgate",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in pts)}",
    ]
    lines += [f"a=rtpmap:{pt} {name}/8000" for name, pt in codecs]
    if dtmf_payload_type is not None:
        lines += [
            f"a=rtpmap:{dtmf_payload_type} telephone-event/8000",
            f"a=fmtp:{dtmf_payload_type} 0-15",
        ]
    lines += ["a=ptime:20", f"a={direction}"]
    return ("\r\n".join(lines) + "\r\n").encode()


def answer(offer: MediaOffer, *, host: str, port: int, session_id: int, version: int) -> bytes:
    """The answer to ``offer``: its chosen codec, its telephone-event type, the mirrored
    direction."""
    return build(
        host=host,
        port=port,
        session_id=session_id,
        version=version,
        codecs=[(offer.codec, offer.payload_type)],
        dtmf_payload_type=offer.dtmf_payload_type,
        direction=answer_direction(offer.direction),
    )
