"""A Twilio Media Streams call (``<Connect><Stream>``) over Starlette's WebSocket.

`TwilioCall` reads Twilio's messages: it waits for ``connected`` and ``start`` (`handshake`),
then feeds the caller's μ-law audio to the session's microphone, keypresses to its DTMF
handler and mark echoes to the `TwilioPlayout`, until ``stop`` or the socket closes. The
playout's sender writes reply audio back on the same socket. No business logic lives here:
who may call, and which session serves the call, is the server's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..session.clock import Clock
from ..session.transport import TransportClosed
from .twilio_messages import (
    MULAW,
    RATE,
    Connected,
    Dtmf,
    Mark,
    Media,
    Other,
    Start,
    Stop,
    TwilioMessage,
    TwilioProtocolError,
    parse,
)
from .twilio_playout import TwilioPlayout

log = logging.getLogger(__name__)

# How long Twilio may take between opening the socket and sending ``start``.
HANDSHAKE_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 20.0
# The caller's audio has gaps (lost packets on Twilio's side show as jumps in ``timestamp``):
# they are filled with silence, up to this much at a time, so the session's audio clock
# keeps to the call's.
MAX_GAP_FILL_MS = 1000
_ULAW_SILENCE = 0xFF


class TwilioCall:
    """One media stream. Set ``microphone``, ``on_dtmf`` and ``on_gone`` before `run`."""

    def __init__(self, ws: WebSocket, clock: Clock, *, send_timeout_s: float = SEND_TIMEOUT_S):
        self.ws = ws
        self.clock = clock
        self.send_timeout_s = send_timeout_s
        self.start: Start | None = None
        self.playout: TwilioPlayout | None = None
        self.microphone: Callable[[bytes], Awaitable[None]] | None = None
        self.on_dtmf: Callable[[str], Awaitable[None]] | None = None
        self.on_gone: Callable[[str], None] = lambda why: None
        self._sender: asyncio.Task[None] | None = None
        self._next_ms: int | None = None  # the timestamp the next caller frame should have
        self._closed = asyncio.Event()
        self._done = asyncio.Event()  # the close frame is out (or the socket gone)

    @property
    def call_sid(self) -> str:
        return self.start.call_sid if self.start is not None else ""

    async def handshake(self, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> Start:
        """Wait for ``start`` (after ``connected``); raises TwilioProtocolError if something
        else comes, or nothing in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = parse(await self._receive())
                    if isinstance(message, Start):
                        break
                    if not isinstance(message, Connected | Other):
                        raise TwilioProtocolError(
                            f"expected 'connected' then 'start', got '{type(message).__name__}'"
                        )
        except TimeoutError:
            raise TwilioProtocolError(f"no 'start' message within {timeout_s:g} s") from None
        fmt = (message.encoding, message.sample_rate, message.channels)
        if fmt != (MULAW, RATE, 1):
            raise TwilioProtocolError(
                f"the stream's media format is {fmt}; voxgate takes {MULAW} at {RATE} Hz, mono"
            )
        self.start = message
        self.playout = TwilioPlayout(message.stream_sid, self._send, self.clock)
        return message

    async def run(self) -> None:
        """Serve the stream until ``stop`` or the socket closes (then ``on_gone``)."""
        assert self.playout is not None, "handshake first"
        self._sender = asyncio.create_task(self._send_audio(), name=f"{self.call_sid}:sender")
        why = "the media stream closed"
        try:
            while not self._closed.is_set():
                try:
                    message = parse(await self._receive())
                except TwilioProtocolError as exc:
                    log.warning("call %s: ignored a message: %s", self.call_sid, exc)
                    continue
                if isinstance(message, Stop):
                    why = "the caller hung up (stop)"
                    break
                await self._handle(message)
        except TransportClosed as exc:
            why = str(exc) or why
        finally:
            self.on_gone(why)

    async def _handle(self, message: TwilioMessage) -> None:
        assert self.playout is not None
        match message:
            case Media(track=track) if track != "inbound":
                return  # only the caller's side is heard
            case Media():
                if self.microphone is not None:
                    await self.microphone(self._with_gaps_filled(message))
            case Dtmf(digit=digit):
                if self.on_dtmf is not None:
                    try:
                        await self.on_dtmf(digit)
                    except ValueError as exc:
                        log.warning("call %s: %s", self.call_sid, exc)
            case Mark(name=name):
                self.playout.acknowledged(name)
            case Connected() | Start() | Stop() | Other():
                return

    def _with_gaps_filled(self, media: Media) -> bytes:
        """The frame's audio, after silence for any time missing before it."""
        audio = media.payload
        expected, self._next_ms = self._next_ms, media.timestamp_ms + len(audio) * 1000 // RATE
        if expected is None or media.timestamp_ms <= expected:
            return audio
        gap_ms = min(media.timestamp_ms - expected, MAX_GAP_FILL_MS)
        return bytes([_ULAW_SILENCE]) * (gap_ms * RATE // 1000) + audio

    async def _send_audio(self) -> None:
        assert self.playout is not None
        try:
            await self.playout.run()
        except TransportClosed as exc:
            self.on_gone(str(exc) or "the media stream closed")

    async def _receive(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"Twilio closed the media stream ({message.get('code')})")
        text = message.get("text")
        return str(text) if text is not None else bytes(message.get("bytes") or b"")

    async def _send(self, text: str) -> None:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await self.ws.send_text(text)
        except TimeoutError:
            raise TransportClosed(
                f"Twilio read nothing from the media stream for {self.send_timeout_s:g} s"
            ) from None
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise TransportClosed(str(exc)) from None

    async def wait_closed(self) -> None:
        """Until `close` has finished (the handler must not return before: the server would
        drop the socket without its close frame)."""
        await self._done.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Stop sending and close the socket; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self.playout is not None:
            self.playout.close()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender
        try:
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):  # Twilio may be gone already
                    await self.ws.close(code, reason[:120])
        finally:
            self._done.set()
