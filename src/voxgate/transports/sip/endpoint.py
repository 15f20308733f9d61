"""The asyncio endpoint around the sans-IO `UserAgent`: datagrams (UDP) and framed messages
(TCP, on the same port number) in, the user agent's messages out (on the peer's TCP
connection when it has one), its timers on the event loop's clock, and its call events
handed to the application's callback. Nothing a peer sends can raise out of here: the user
agent answers bad messages itself, and a failing callback is logged, not propagated into the
transport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from .events import Addr, Call, Output, Send
from .stream import StreamServer
from .useragent import UserAgent

log = logging.getLogger(__name__)
CallEvent = Callable[[Output], None]


class SipEndpoint(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent, on_event: CallEvent) -> None:
        self.ua = ua
        self._on_event = on_event
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._streams = StreamServer(self._from_stream)

    @classmethod
    async def open(cls, host: str, port: int, public_host: str, on_event: CallEvent) -> SipEndpoint:
        """Listen on ``host:port``, UDP and TCP (port 0: any port free for both, written back
        into the user agent)."""
        for _ in range(9 if port == 0 else 0):
            try:
                return await cls._bind(host, port, public_host, on_event)
            except OSError:  # the UDP port chosen is taken for TCP: choose again
                continue
        return await cls._bind(host, port, public_host, on_event)

    @classmethod
    async def _bind(
        cls, host: str, port: int, public_host: str, on_event: CallEvent
    ) -> SipEndpoint:
        endpoint = cls(UserAgent(public_host, port), on_event)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: endpoint, local_addr=(host, port)
        )
        endpoint.ua.port = transport.get_extra_info("sockname")[1]
        try:  # TCP on the same port number
            await endpoint._streams.start(host, endpoint.ua.port)
        except OSError:
            transport.close()
            raise
        return endpoint

    @property
    def port(self) -> int:
        return self.ua.port

    def now(self) -> float:
        return self._loop.time()

    # -- asyncio.DatagramProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, though it behaves as one.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        self.run(self.ua.receive(data, source, self.now()))

    def _from_stream(self, data: bytes, peer: Addr) -> None:
        # TCP is reliable: the user agent retransmits nothing on it and writes Via …/TCP.
        self.run(self.ua.receive(data, peer, self.now(), reliable=True))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the retransmission timers cover the loss.
        log.debug("SIP socket error: %s", exc)

    # -- driving the user agent ------------------------------------------------------------

    def run(self, outputs: list[Output]) -> None:
        """Send what the user agent wrote, hand over its call events, re-arm its timer."""
        for out in outputs:
            if isinstance(out, Send):
                self._send(out)
                continue
            try:
                self._on_event(out)
            except Exception:
                log.exception("handling SIP event %s failed", type(out).__name__)
        self._arm()

    def _send(self, out: Send) -> None:
        """On the peer's TCP connection when it has one, else over UDP."""
        writer = self._streams.writer_for(out.addr)
        if writer is not None:
            writer.write(out.data)
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(out.data, out.addr)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.ua.next_deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.run(self.ua.tick(self.now()))

    def ring(self, call: Call) -> None:
        self.run(self.ua.ring(call))

    def answer(self, call: Call, body: bytes, local_media: Addr) -> None:
        self.run(self.ua.answer(call, body, local_media, self.now()))

    def reject(
        self,
        call: Call,
        status: int,
        reason: str = "",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.run(self.ua.reject(call, status, self.now(), reason, headers))

    def hangup(self, call: Call) -> None:
        self.run(self.ua.hangup(call, self.now()))

    def refer(self, call: Call, target_uri: str) -> None:
        self.run(self.ua.refer(call, target_uri, self.now()))

    def invite(
        self,
        *,
        to_uri: str,
        from_uri: str,
        target: Addr,
        body: bytes,
        local_media: Addr,
        credentials: tuple[str, str] | None = None,
    ) -> Call:
        call, outputs = self.ua.invite(
            to_uri=to_uri,
            from_uri=from_uri,
            target=target,
            body=body,
            local_media=local_media,
            now=self.now(),
            credentials=credentials,
        )
        self.run(outputs)
        return call

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._streams.close()
        if self._transport is not None:
            self._transport.close()
