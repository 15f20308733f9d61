"""A stand-in for Twilio, which tests cannot reach, speaking its protocols as Twilio documents
them: the voice webhook (a form POST signed with X-Twilio-Signature by the `twilio` package's
own validator) and a bidirectional Media Stream that follows the TwiML it is given.

The stream plays what it is sent as a phone would: in real time, from a buffer, echoing each
``mark`` once the audio sent before it has played, and on ``clear`` dropping what is buffered
and echoing the marks in it at once (as Twilio does). The caller's side is a live line:
20 ms μ-law frames in real time, silence unless the test has the caller say something.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx
import websockets
from twilio.request_validator import RequestValidator

FRAME_S = 0.02
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
ULAW_SILENCE = b"\xff" * FRAME_BYTES


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Webhook:
    """What Twilio POSTs when a call comes in."""

    call_sid: str = field(default_factory=lambda: sid("CA"))
    account_sid: str = field(default_factory=lambda: sid("AC"))

    def params(self) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Called": "+15557654321",
            "Caller": "+15551234567",
            "Direction": "inbound",
            "From": "+15551234567",
            "To": "+15557654321",
        }


async def post_webhook(
    url: str, auth_token: str, webhook: Webhook, signature: str | None = "sign"
) -> httpx.Response:
    """The webhook request; ``signature="sign"`` signs it as Twilio would."""
    params = webhook.params()
    headers = {}
    if signature == "sign":
        signature = RequestValidator(auth_token).compute_signature(url, params)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with httpx.AsyncClient() as http:
        return await http.post(url, data=params, headers=headers)


@dataclass
class StreamTwiML:
    url: str
    parameters: dict[str, str]


def connect_stream(twiml: str) -> StreamTwiML:
    """The ``<Connect><Stream>`` of a TwiML answer (a bidirectional stream)."""
    root = ElementTree.fromstring(twiml)
    assert root.tag == "Response", twiml
    stream = root.find("./Connect/Stream")
    assert stream is not None, f"no <Connect><Stream> in {twiml}"
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamTwiML(stream.get("url", ""), params)


@dataclass
class Ack:
    name: str
    position: int  # bytes of reply audio received before the mark
    played: bool  # False: echoed because a clear dropped its audio
    at: float


class MediaStream:
    """One bidirectional Media Stream, from Twilio's side."""

    def __init__(self, ws: Any, webhook: Webhook, parameters: dict[str, str]) -> None:
        self.ws = ws
        self.webhook = webhook
        self.parameters = parameters
        self.stream_sid = sid("MZ")
        self.sequence = 0
        self.received: list[tuple[float, dict[str, Any]]] = []  # every message, with time
        self.audio = bytearray()  # every byte of reply audio received
        self.heard = bytearray()  # what the caller heard, in order
        self.acks: list[Ack] = []
        self.clears: list[tuple[float, int]] = []  # when, and how much had played
        self.played = 0  # bytes of `audio` played (or skipped by a clear)
        self._pending: list[tuple[str, int]] = []  # marks not yet echoed, with positions
        self._speech = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self.closed: tuple[int | None, str] | None = None
        self.started_at = 0.0

    # -- Twilio → server ------------------------------------------------------------------

    async def _send(self, event: str, **body: Any) -> None:
        message: dict[str, Any] = {"event": event}
        if event != "connected":
            self.sequence += 1
            message["sequenceNumber"] = str(self.sequence)
            message["streamSid"] = self.stream_sid
        message.update(body)
        await self.ws.send(json.dumps(message))

    async def begin(self) -> None:
        """``connected``, ``start``, then the live line and the player."""
        await self._send("connected", protocol="Call", version="1.0.0")
        start = {
            "accountSid": self.webhook.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.webhook.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": self.parameters,
        }
        await self._send("start", start=start)
        self.started_at = time.monotonic()
        for work in (self._line(), self._listen(), self._play()):
            self._tasks.append(asyncio.create_task(work))

    def say(self, ulaw: bytes) -> None:
        self._speech += ulaw

    @property
    def unechoed_marks(self) -> int:
        """Marks received whose audio has not played yet."""
        return len(self._pending)

    async def press(self, digit: str) -> None:
        await self._send("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    async def hang_up(self) -> None:
        stop = {"accountSid": self.webhook.account_sid, "callSid": self.webhook.call_sid}
        await self._send("stop", stop=stop)

    async def _line(self) -> None:
        chunk = 0
        while True:
            frame = bytes(self._speech[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
            del self._speech[:FRAME_BYTES]
            chunk += 1
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str((chunk - 1) * 20),
                "payload": base64.b64encode(frame).decode(),
            }
            await self._send("media", media=media)
            due = self.started_at + chunk * FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    # -- server → Twilio ------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                self.received.append((time.monotonic(), message))
                match message.get("event"):
                    case "media":
                        self.audio += base64.b64decode(message["media"]["payload"])
                    case "mark":
                        self._pending.append((message["mark"]["name"], len(self.audio)))
                    case "clear":
                        await self._clear()
                self._changed.set()
        except websockets.ConnectionClosed:
            pass  # (a clean close ends the loop instead)
        self.closed = (self.ws.close_code, self.ws.close_reason or "")
        self._changed.set()

    async def _clear(self) -> None:
        self.clears.append((time.monotonic(), self.played))
        self.played = len(self.audio)  # what was buffered is dropped, never heard
        for name, position in self._pending:
            await self._echo(name, position, played=False)
        self._pending.clear()

    async def _echo(self, name: str, position: int, *, played: bool) -> None:
        self.acks.append(Ack(name, position, played, time.monotonic()))
        await self._send("mark", mark={"name": name})

    async def _play(self) -> None:
        """A frame every 20 ms from the buffer, as a phone plays it."""
        start, frames = time.monotonic(), 0
        while True:
            if self.played < len(self.audio):
                frame = self.audio[self.played : self.played + FRAME_BYTES]
                self.heard += frame
                self.played += len(frame)
            while self._pending and self._pending[0][1] <= self.played:
                name, position = self._pending.pop(0)
                await self._echo(name, position, played=True)
            self._changed.set()
            frames += 1
            await asyncio.sleep(max(0.0, start + frames * FRAME_S - time.monotonic()))

    async def wait_for(self, condition: Any, timeout_s: float = 30.0) -> None:
        """Until ``condition()`` holds (checked whenever something arrives or plays)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def messages(self, event: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == event]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.ws.close()


@contextlib.asynccontextmanager
async def media_stream(stream: StreamTwiML, webhook: Webhook) -> Any:
    async with websockets.connect(stream.url) as ws:
        call = MediaStream(ws, webhook, stream.parameters)
        try:
            yield call
        finally:
            await call.close()
