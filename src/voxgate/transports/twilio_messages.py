"""Twilio Media Streams messages, with no I/O (docs/telephony.md lists the shapes).

Twilio sends JSON text frames with an ``event`` field: ``connected`` first, then ``start``,
then ``media``, ``dtmf`` and ``mark`` (the echo of a mark we sent, once the audio before it
has played or was cleared), and ``stop`` last. We send ``media`` (base64 μ-law 8 kHz),
``mark`` and ``clear``, each with the stream's SID.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

MULAW = "audio/x-mulaw"
RATE = 8000


class TwilioProtocolError(Exception):
    """The peer sent something that is not Twilio's Media Streams protocol."""


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: list[str]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    track: str
    chunk: int
    timestamp_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str = ""


@dataclass(frozen=True, slots=True)
class Other:
    """An event this server has no use for (Twilio may add more); ignored."""

    event: str
    raw: dict[str, Any] = field(default_factory=dict)


TwilioMessage = Connected | Start | Media | Dtmf | Mark | Stop | Other


def _object(parent: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"a '{event}' message needs a '{key}' object")
    return value


def _text(parent: dict[str, Any], key: str, event: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise TwilioProtocolError(f"a '{event}' message needs '{key}' as a non-empty string")
    return value


def _int(value: Any, default: int = 0) -> int:
    # Twilio sends counters and timestamps as decimal strings.
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def parse(raw: str | bytes) -> TwilioMessage:
    """One message from Twilio; raises TwilioProtocolError for anything malformed."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TwilioProtocolError("a message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise TwilioProtocolError("a message is not a JSON object with an 'event'")
    event = message["event"]
    match event:
        case "connected":
            return Connected(str(message.get("protocol", "")), str(message.get("version", "")))
        case "start":
            return _start(_object(message, "start", event))
        case "media":
            return _media(_object(message, "media", event))
        case "dtmf":
            return Dtmf(_text(_object(message, "dtmf", event), "digit", event))
        case "mark":
            return Mark(_text(_object(message, "mark", event), "name", event))
        case "stop":
            stop = message.get("stop")
            return Stop(str(stop.get("callSid", "")) if isinstance(stop, dict) else "")
        case _:
            return Other(event, message)


def _start(start: dict[str, Any]) -> Start:
    fmt = start.get("mediaFormat")
    fmt = fmt if isinstance(fmt, dict) else {}
    params = start.get("customParameters")
    params = params if isinstance(params, dict) else {}
    tracks = start.get("tracks")
    return Start(
        stream_sid=_text(start, "streamSid", "start"),
        call_sid=_text(start, "callSid", "start"),
        account_sid=str(start.get("accountSid", "")),
        tracks=[str(t) for t in tracks] if isinstance(tracks, list) else ["inbound"],
        custom_parameters={str(k): str(v) for k, v in params.items()},
        encoding=str(fmt.get("encoding", MULAW)),
        sample_rate=_int(fmt.get("sampleRate"), RATE),
        channels=_int(fmt.get("channels"), 1),
    )


def _media(media: dict[str, Any]) -> Media:
    payload = _text(media, "payload", "media")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise TwilioProtocolError("a 'media' message's payload is not base64") from None
    return Media(
        track=str(media.get("track", "inbound")),
        chunk=_int(media.get("chunk")),
        timestamp_ms=_int(media.get("timestamp")),
        payload=audio,
    )


def media_message(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode()
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})
