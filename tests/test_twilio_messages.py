"""Twilio Media Streams messages, in the shapes Twilio documents (docs/telephony.md)."""

from __future__ import annotations

import base64
import json

import pytest

from voxgate.transports.twilio_messages import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Other,
    Start,
    Stop,
    TwilioProtocolError,
    clear_message,
    mark_message,
    media_message,
    parse,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def test_twilios_messages_parse() -> None:
    assert parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected(
        "Call", "1.0.0"
    )
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC123",
            "streamSid": SID,
            "callSid": "CA123",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"voxgate_token": "t"},
        },
        "streamSid": SID,
    }
    parsed = parse(json.dumps(start))
    assert isinstance(parsed, Start)
    assert (parsed.stream_sid, parsed.call_sid, parsed.account_sid) == (SID, "CA123", "AC123")
    assert parsed.custom_parameters == {"voxgate_token": "t"}
    assert (parsed.encoding, parsed.sample_rate, parsed.channels) == ("audio/x-mulaw", 8000, 1)
    audio = bytes(range(160))
    media = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(audio).decode(),
        },
        "streamSid": SID,
    }
    assert parse(json.dumps(media)) == Media("inbound", 1, 5, audio)
    dtmf = {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert parse(json.dumps(dtmf)) == Dtmf("1")
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "m1"}}
    assert parse(json.dumps(mark)) == Mark("m1")
    stop = {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": "AC123", "callSid": "CA123"},
        "streamSid": SID,
    }
    assert parse(json.dumps(stop)) == Stop("CA123")
    assert isinstance(parse('{"event":"something-new"}'), Other)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        '{"no":"event"}',
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"***"}}',
        '{"event":"start","start":{"callSid":"CA1"}}',
        '{"event":"mark","mark":{}}',
        b"\xff\xfe",
    ],
)
def test_malformed_messages_are_protocol_errors(raw: str | bytes) -> None:
    with pytest.raises(TwilioProtocolError):
        parse(raw)


def test_what_we_send_has_twilios_shapes() -> None:
    assert json.loads(media_message(SID, b"\xff\x7f")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(b"\xff\x7f").decode()},
    }
    assert json.loads(mark_message(SID, "m1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m1"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}
