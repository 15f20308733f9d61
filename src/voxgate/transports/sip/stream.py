"""SIP over TCP (RFC 3261 §18.3): the framing of a byte stream into messages, sans-IO, and the
asyncio server that feeds each connection's messages to the endpoint. On a stream the
``Content-Length`` header says where a message ends (absent: no body); a header block over
`MAX_HEADER_BYTES` or a body over `MAX_BODY_BYTES` closes the connection."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from .message import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)
Addr = tuple[str, int]


class StreamError(ValueError):
    """The stream cannot be framed any further; the connection is closed."""


def take_messages(buffer: bytearray) -> list[bytes]:
    """The complete messages at the front of ``buffer``, removed from it."""
    messages: list[bytes] = []
    while True:
        while buffer[:2] == b"\r\n":  # keep-alive CRLFs between messages (RFC 5626)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise StreamError("SIP header block too long")
            return messages
        if end > MAX_HEADER_BYTES:
            raise StreamError("SIP header block too long")
        found = _LENGTH.search(bytes(buffer[:end]))
        length = int(found.group(1)) if found else 0
        if length > MAX_BODY_BYTES:
            raise StreamError("SIP body too long")
        total = end + 4 + length
        if len(buffer) < total:
            return messages
        messages.append(bytes(buffer[:total]))
        del buffer[:total]


class StreamServer:
    """Accepts TCP connections; hands each message to ``receive(data, peer)`` and keeps the
    connection so that replies to that peer go back on it (`writer_for`)."""

    def __init__(self, receive: Callable[[bytes, Addr], None]) -> None:
        self._receive = receive
        self._writers: dict[Addr, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    def writer_for(self, peer: Addr) -> asyncio.StreamWriter | None:
        writer = self._writers.get(peer)
        return writer if writer is not None and not writer.is_closing() else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = (str(host), int(port))
        self._writers[peer] = writer
        buffer = bytearray()
        try:
            while data := await reader.read(65536):
                buffer += data
                for message in take_messages(buffer):
                    self._receive(message, peer)
        except (StreamError, ConnectionError) as exc:
            log.info("SIP/TCP connection from %s:%d closed: %s", *peer, exc)
        finally:
            self._writers.pop(peer, None)
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers.values():
            writer.close()
