"""Checks an SDP offer must pass before it is handed to aiortc, which would accept it and
fail later in a background task (an offer without a usable DTLS fingerprint ends in an
AssertionError once ICE connects). Each problem is phrased for the client to fix."""

from __future__ import annotations

import re

# The digests aiortc can check a peer certificate with, and their sizes in bytes.
FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


def offer_problem(sdp: str) -> str | None:
    """What makes ``sdp`` unusable as a call offer, or None if it looks usable."""
    session, sections = _sections(sdp)
    audio = [s for s in sections if s[0].startswith("m=audio ")]
    if not audio:
        return (
            "The SDP offer has no audio media section: a Realtime call needs an audio track "
            "(the microphone), e.g. pc.addTransceiver('audio') before createOffer()."
        )
    for section in sections:
        if _rejected(section[0]):
            continue
        attrs = session + section
        if problem := _fingerprint_problem(attrs):
            return problem
        if not any(a.startswith("a=ice-ufrag:") for a in attrs) or not any(
            a.startswith("a=ice-pwd:") for a in attrs
        ):
            return "The SDP offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)."
    return None


def _sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    sections: list[list[str]] = []
    for line in (raw.strip() for raw in sdp.splitlines()):
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _rejected(m_line: str) -> bool:
    parts = m_line.split()
    return len(parts) > 1 and parts[1] == "0"


def _fingerprint_problem(attrs: list[str]) -> str | None:
    prints = [a[len("a=fingerprint:") :].split() for a in attrs if a.startswith("a=fingerprint:")]
    if not prints:
        return (
            "The SDP offer has no DTLS fingerprint (a=fingerprint:sha-256 ...): the call "
            "cannot be secured. Send the offer RTCPeerConnection.createOffer() made, unchanged."
        )
    usable = 0
    for fields in prints:
        if len(fields) != 2:
            return f"Invalid DTLS fingerprint line 'a=fingerprint:{' '.join(fields)}'."
        algorithm, value = fields[0].lower(), fields[1]
        size = FINGERPRINT_BYTES.get(algorithm)
        if size is None:
            continue
        pairs = value.split(":")
        if len(pairs) != size or not all(_HEX_PAIR.fullmatch(p) for p in pairs):
            return (
                f"Invalid {algorithm} DTLS fingerprint '{value[:120]}': expected {size} "
                "colon-separated hex bytes."
            )
        usable += 1
    if not usable:
        return (
            "The SDP offer has no DTLS fingerprint this server can check; supported: "
            f"{', '.join(FINGERPRINT_BYTES)}."
        )
    return None
