"""`TwilioCall` over a scripted socket: the handshake, and how each message of a stream is
dispatched (caller audio with its gaps filled, keypresses, mark echoes, stop)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from starlette.websockets import WebSocketState

from voxgate.session.clock import VirtualClock
from voxgate.transports.twilio import TwilioCall
from voxgate.transports.twilio_messages import TwilioProtocolError

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "accountSid": "AC1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"voxgate_token": "t"},
    },
    "streamSid": "MZ1",
}


class ScriptedSocket:
    """Starlette's WebSocket as TwilioCall uses it, fed from a script."""

    application_state = WebSocketState.CONNECTED

    def __init__(self, messages: list[dict[str, Any] | str]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in messages:
            text = message if isinstance(message, str) else json.dumps(message)
            self.incoming.put_nowait({"type": "websocket.receive", "text": text})
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.application_state = WebSocketState.DISCONNECTED


def media(timestamp: int, payload: bytes, track: str = "inbound") -> dict[str, Any]:
    body = {"track": track, "chunk": "1", "timestamp": str(timestamp)}
    body["payload"] = base64.b64encode(payload).decode()
    return {"event": "media", "streamSid": "MZ1", "media": body}


async def test_a_stream_is_dispatched_until_stop() -> None:
    ws = ScriptedSocket(
        [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            START,
            media(0, b"\x01" * 160),
            media(20, b"\x02" * 160),
            media(100, b"\x03" * 160),  # 60 ms went missing on the way
            media(120, b"\x04" * 160, track="outbound"),  # not the caller: not heard
            "not json",  # skipped
            {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "5"}},
            {"event": "mark", "streamSid": "MZ1", "mark": {"name": "unknown"}},
            {"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}},
            media(140, b"\x05" * 160),  # after stop: never read
        ]
    )
    call = TwilioCall(ws, VirtualClock())  # type: ignore[arg-type]
    start = await call.handshake()
    assert (start.call_sid, start.stream_sid) == ("CA1", "MZ1")
    assert start.custom_parameters == {"voxgate_token": "t"}
    heard: list[bytes] = []
    keys: list[str] = []
    gone: list[str] = []

    async def microphone(audio: bytes) -> None:
        heard.append(audio)

    async def dtmf(digit: str) -> None:
        keys.append(digit)

    call.microphone, call.on_dtmf, call.on_gone = microphone, dtmf, gone.append
    await call.run()
    assert heard[:2] == [b"\x01" * 160, b"\x02" * 160]
    assert heard[2] == b"\xff" * 480 + b"\x03" * 160  # the gap, as μ-law silence
    assert len(heard) == 3
    assert keys == ["5"]
    assert gone == ["the caller hung up (stop)"]
    await call.close(1000, "session ended")
    assert ws.closed == (1000, "session ended")
    await call.wait_closed()


@pytest.mark.parametrize(
    ("first", "problem"),
    [
        ({"event": "media", "media": {"payload": "AA=="}}, "expected 'connected' then 'start'"),
        (
            {**START, "start": {**START["start"], "mediaFormat": {"encoding": "audio/l16"}}},
            "voxgate takes audio/x-mulaw",
        ),
    ],
)
async def test_a_stream_that_does_not_start_as_twilio_starts_is_refused(
    first: dict[str, Any], problem: str
) -> None:
    call = TwilioCall(ScriptedSocket([first]), VirtualClock())  # type: ignore[arg-type]
    with pytest.raises(TwilioProtocolError, match=problem):
        await call.handshake()


async def test_no_start_in_time_is_refused() -> None:
    call = TwilioCall(ScriptedSocket([]), VirtualClock())  # type: ignore[arg-type]
    with pytest.raises(TwilioProtocolError, match="no 'start' message"):
        await call.handshake(timeout_s=0.05)
