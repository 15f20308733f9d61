"""HTTP edges against a real server: unusable offers and session parts get OpenAI-shaped
400s (never a 201 for a call that cannot work, never a plain-text 500), oversized bodies 413
before they are read, slow headers and stalled bodies are dropped, an aborted upload is one
log line, and keys put in URLs never reach the logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection

from conftest import RunningServer, free_port
from voxgate.server.redact import RedactQueries, redact_url
from voxgate.settings import Settings

AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    settings = Settings(
        port=free_port(), stt_workers=1, http_header_timeout_s=1.0, http_body_timeout_s=1.0
    )
    running = RunningServer(settings, None)
    running.start()
    yield running
    running.stop()


async def browser_offer(*, audio: bool = True) -> str:
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("oai-events")
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def post_sdp(server: RunningServer, sdp: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server.base_url}/realtime/calls",
            content=sdp.encode(),
            headers={**AUTH, "Content-Type": "application/sdp"},
        )


async def post_form(server: RunningServer, sdp: str, session: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server.base_url}/realtime/calls",
            headers=AUTH,
            files={"sdp": (None, sdp), "session": (None, session)},
        )


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


async def test_offers_without_a_usable_fingerprint_are_refused(server: RunningServer) -> None:
    offer = await browser_offer()
    missing = "\r\n".join(line for line in offer.split("\r\n") if "fingerprint" not in line)
    bad = re.sub(r"a=fingerprint:sha-256 \S+", "a=fingerprint:sha-256 ZZ:01", offer)
    unknown = re.sub(r"a=fingerprint:sha-\d+", "a=fingerprint:md5", offer)
    for sdp in (missing, bad, unknown):
        error = openai_error(await post_sdp(server, sdp), 400)
        assert error["code"] == "invalid_offer" and error["param"] == "sdp"
        assert "fingerprint" in error["message"]
    assert (await post_sdp(server, offer)).status_code == 201  # the untouched offer works


async def test_an_offer_without_audio_is_refused(server: RunningServer) -> None:
    error = openai_error(await post_sdp(server, await browser_offer(audio=False)), 400)
    assert error["code"] == "invalid_offer" and "audio" in error["message"]


async def test_deep_or_unencodable_session_parts_are_400s(server: RunningServer) -> None:
    offer = await browser_offer()
    deep = openai_error(await post_form(server, offer, '{"a":' * 5000 + "1" + "}" * 5000), 400)
    assert "deeper than" in deep["message"]
    bad_text = '{"type": "realtime", "instructions": "\\ud800"}'
    surrogate = openai_error(await post_form(server, offer, bad_text), 400)
    assert surrogate["param"] == "session.instructions"
    assert surrogate["code"] == "invalid_value"


async def test_a_session_error_names_its_field_once(server: RunningServer) -> None:
    session = json.dumps({"type": "realtime", "audio": {"output": {"voice": 5}}})
    error = openai_error(await post_form(server, await browser_offer(), session), 400)
    assert error["param"] == "session.audio.output.voice"


async def raw_request(
    server: RunningServer, head: bytes, *body: bytes, wait_s: float = 10.0
) -> bytes:
    """Send ``head`` and then the ``body`` pieces while reading, concurrently, whatever comes
    back until the server closes (a server that stops reading may reset the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)

    async def read_all() -> bytes:
        got = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                got += chunk
        return got

    reading = asyncio.create_task(read_all())
    try:
        with contextlib.suppress(ConnectionError):
            for piece in (head, *body):
                writer.write(piece)
                await writer.drain()
        async with asyncio.timeout(wait_s):
            return await reading
    finally:
        reading.cancel()
        writer.close()


def post_head(length: int | None, content_type: str = "application/sdp") -> bytes:
    size = (
        f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    )
    return (
        f"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
        f"Content-Type: {content_type}\r\n{size}\r\n"
    ).encode()


async def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(
    server: RunningServer,
) -> None:
    # 50 MB announced, 10 bytes sent: the answer comes without waiting for the rest.
    reply = await raw_request(server, post_head(50_000_000), b"v=0\r\nxxxxx")
    assert reply.startswith(b"HTTP/1.1 413")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"


async def test_a_chunked_body_over_the_limit_is_cut_off(server: RunningServer) -> None:
    chunk = b"x" * 100_000
    body = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 5 + [b"0\r\n\r\n"]
    reply = await raw_request(server, post_head(None), *body)
    assert reply.startswith(b"HTTP/1.1 413")


async def test_slow_headers_are_dropped(server: RunningServer) -> None:
    reply = await raw_request(server, b"POST /v1/realtime/calls HTTP/1.1\r\nHost: x\r\n")
    assert reply == b""  # closed by the server after its header timeout, nothing sent


async def test_a_stalled_body_gets_408(server: RunningServer) -> None:
    reply = await raw_request(server, post_head(1000), b"v=0\r\n")
    assert reply.startswith(b"HTTP/1.1 408")


class Seen(logging.Handler):
    """Records what a logger wrote and signals (across threads) when a line matches."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = pattern
        self.records: list[logging.LogRecord] = []
        self.matched = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.pattern in record.getMessage():
            self.matched.set()


async def test_an_aborted_upload_is_one_log_line(server: RunningServer) -> None:
    seen = Seen("went away")
    root = logging.getLogger()
    root.addHandler(seen)
    level = logging.getLogger("voxgate").level
    logging.getLogger("voxgate").setLevel(logging.INFO)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.settings.port)
        writer.write(post_head(10_000) + b"v=0\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        assert await asyncio.to_thread(seen.matched.wait, 10)
    finally:
        root.removeHandler(seen)
        logging.getLogger("voxgate").setLevel(level)
    assert not [r for r in seen.records if r.levelno >= logging.ERROR or r.exc_info]


def test_keys_in_query_strings_are_redacted_from_logged_urls(server: RunningServer) -> None:
    url = "/v1/realtime?model=gpt-realtime&api_key=sk-secret&key=abc&call_id=rtc_1"
    assert redact_url(url) == (
        "/v1/realtime?model=gpt-realtime&api_key=[redacted]&key=[redacted]&call_id=rtc_1"
    )
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/realtime?token=sk-secret", "1.1", 403), None,
    )  # fmt: skip
    RedactQueries().filter(record)
    assert "sk-secret" not in record.getMessage()
    assert logging.getLogger("uvicorn.access").filters  # installed by the app
