"""RTP on the wire (RFC 3550) and RFC 4733 telephone events, sans-IO: bytes in, values out.

What is read: version 2 packets with any CSRC count, header extension and padding; RTCP
(packet types 192-223 in the second byte, RFC 5761) is recognised so that it can be ignored.
What is written: plain packets (no CSRCs, no extension, no padding). Sequence numbers wrap at
2**16; `SequenceUnwrapper` extends them so ordering survives the wrap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
DTMF_PAYLOAD = struct.Struct("!BBH")
# RFC 4733 event codes 0-15: the keypad.
DTMF_EVENTS = "0123456789*#ABCD"


class NotRtp(ValueError):
    """The datagram is not an RTP packet voxgate can read."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def encode(self) -> bytes:
        first = RTP_VERSION << 6
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = HEADER.pack(
            first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        return header + self.payload


def is_rtcp(data: bytes) -> bool:
    """RTCP multiplexed onto the RTP port (RFC 5761): sender/receiver reports and friends."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet; raises `NotRtp` for anything else (RTCP included)."""
    if len(data) < HEADER.size:
        raise NotRtp(f"{len(data)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise NotRtp(f"RTP version {first >> 6}, expected {RTP_VERSION}")
    if is_rtcp(data):
        raise NotRtp("an RTCP packet")
    start = HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # a header extension: 4 bytes, then its length in 32-bit words
        if len(data) < start + 4:
            raise NotRtp("truncated header extension")
        (words,) = struct.unpack_from("!H", data, start + 2)
        start += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        if end <= start or data[-1] == 0 or data[-1] > end - start:
            raise NotRtp("bad padding")
        end -= data[-1]
    if start > end:
        raise NotRtp("header longer than the packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[start:end], bool(second & 0x80))


class SequenceUnwrapper:
    """16-bit sequence numbers → a monotone count (RFC 3550 A.1's idea): a number within half
    the space of the last one is taken as the nearest, across the wrap."""

    def __init__(self) -> None:
        self._last: int | None = None

    def extend(self, sequence: int) -> int:
        if self._last is None:
            self._last = sequence
            return sequence
        delta = (sequence - self._last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        extended = self._last + delta
        self._last = max(self._last, extended)
        return extended


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    digit: str
    kind: Literal["start", "end"]
    duration: int  # in RTP timestamp units so far


class DtmfReceiver:
    """RFC 4733 telephone events → one "start" and one "end" per key press. Every packet of an
    event carries the event's start timestamp; the end packet is sent three times (and start
    packets may be lost), so events are told apart by timestamp and each kind is reported once.
    """

    def __init__(self) -> None:
        self._started: set[int] = set()
        self._ended: set[int] = set()

    def feed(self, timestamp: int, payload: bytes) -> list[DtmfEvent]:
        if len(payload) < DTMF_PAYLOAD.size:
            return []
        code, flags, duration = DTMF_PAYLOAD.unpack_from(payload)
        if code >= len(DTMF_EVENTS):
            return []  # a tone or line event, not a key
        digit, end = DTMF_EVENTS[code], bool(flags & 0x80)
        out: list[DtmfEvent] = []
        if timestamp not in self._started:
            self._started.add(timestamp)
            out.append(DtmfEvent(digit, "start", duration))
        if end and timestamp not in self._ended:
            self._ended.add(timestamp)
            out.append(DtmfEvent(digit, "end", duration))
        # Only the latest few events can still send packets: forget the rest.
        if len(self._started) > 64:
            keep = sorted(self._started)[-16:]
            self._started = set(keep)
            self._ended &= self._started
        return out


def dtmf_payload(digit: str, *, end: bool, duration: int, volume: int = 10) -> bytes:
    """An RFC 4733 event payload for ``digit`` (for tests and the load client)."""
    flags = (0x80 if end else 0) | (volume & 0x3F)
    return DTMF_PAYLOAD.pack(DTMF_EVENTS.index(digit), flags, duration & 0xFFFF)
