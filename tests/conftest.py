"""Shared fixtures: a real voxgate server on a random loopback port, speech made by
espeak-ng (the same samples every time), and strict validation of server events against the
`openai` SDK's types."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from _espeak import speak
from voxgate.server.app import create_app
from voxgate.server.http_limits import uvicorn_options
from voxgate.session.engines import EngineSet
from voxgate.settings import Settings

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
REQUIRE_ALL = os.environ.get("VOXGATE_REQUIRE_ALL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip loudly when a system component is missing; under VOXGATE_REQUIRE_ALL=1 (CI)
    the missing component fails the test instead."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required component missing: {reason}")
    pytest.skip(f"MISSING COMPONENT — {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    def __init__(self, settings: Settings, engines: EngineSet | None) -> None:
        self.settings = settings
        self.app = create_app(settings, engines)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            ws_max_size=int(settings.max_message_mb * 1024 * 1024),
            lifespan="on",
            **uvicorn_options(settings.http_header_timeout_s),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="voxgate-test-server")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/v1/realtime"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("voxgate test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with given settings (and optionally engines); all stop at teardown."""
    running: list[RunningServer] = []

    def start(engines: EngineSet | None = None, **settings: Any) -> RunningServer:
        server = RunningServer(Settings(port=free_port(), **settings), engines)
        server.start()
        running.append(server)
        return server

    def stop_all() -> None:
        while running:
            running.pop().stop()

    start.stop_all = stop_all  # type: ignore[attr-defined]
    yield start
    stop_all()


@pytest.fixture(scope="module")
def voxgate_server() -> Iterator[RunningServer]:
    """One server on the embedded defaults, shared by a module's tests."""
    server = RunningServer(Settings(port=free_port()), None)
    server.start()
    yield server
    server.stop()


def speech_pcm24k(text: str) -> bytes:
    """Spoken English as 24 kHz PCM16 (the Realtime input format), the same samples on every
    call: the server's own espeak instance carries state from one synthesis to the next, so
    speech made through it would differ with what the server said before."""
    return speak(text, sample_rate=24000)


_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def words_of(text: str) -> set[str]:
    """The words of a transcript, lower case, without punctuation, digits spelled out
    (Whisper writes "one, two, three" as "1, 2, 3")."""
    found = re.findall(r"[a-z0-9']+", text.lower())
    return {_NUMBERS[int(w)] if w.isdigit() and int(w) <= 10 else w for w in found}


def heard(transcript: str, key_words: set[str]) -> bool:
    """Whether every key word of what was said is in the transcript."""
    return key_words <= words_of(transcript)


def validated(raw: str | bytes) -> Any:
    """Parse one server event with the SDK's own union; fails the test if it does not fit."""
    return SERVER_EVENT.validate_json(raw)


# One streamed chunk of a Chat Completions answer: the choice's delta and finish reason.
ChatChunk = tuple[dict[str, Any], str | None]


class SlowChatServer:
    """An OpenAI-compatible Chat Completions endpoint (real HTTP, SSE) that streams a long
    answer slowly: the stand-in for a hosted LLM we cannot reach from tests. ``script``
    replaces the answer with the given chunks (text or tool-call deltas); ``scripts`` gives
    one answer per request, in order (the last one repeats); ``respond``, when set, makes the
    answer from the request body (a model that reacts to what it is sent: tool results)."""

    def __init__(
        self,
        words: int = 200,
        delay_s: float = 0.05,
        script: list[ChatChunk] | None = None,
        scripts: list[list[ChatChunk]] | None = None,
    ) -> None:
        if script is not None:
            scripts = [script]
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.closed_early = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.respond: Callable[[dict[str, Any]], list[ChatChunk]] | None = None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                import json

                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(json.loads(body))
                script = scripts[min(len(outer.requests), len(scripts)) - 1] if scripts else None
                if outer.respond is not None:
                    script = outer.respond(outer.requests[-1])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunks = script or [
                    ({"content": f"word{i}{'. ' if i % 8 == 7 else ' '}"}, None)
                    for i in range(words)
                ]
                try:
                    for delta, finish in chunks:
                        self._event(delta, finish)
                        time.sleep(delay_s)
                    if script is None:
                        self._event({}, "stop")
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    outer.closed_early.set()

            def _event(self, delta: dict[str, Any], finish: str | None) -> None:
                import json

                chunk = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "slow-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up mid-stream is what the cancel tests do

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_chat_server() -> Iterator[SlowChatServer]:
    server = SlowChatServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes to the user's data directory: servers that are not given a data_dir
    (or a database) keep their store in a temporary one."""
    saved = os.environ.get("VOXGATE_DATA_DIR")
    os.environ["VOXGATE_DATA_DIR"] = str(tmp_path_factory.mktemp("voxgate-data"))
    yield
    if saved is None:
        os.environ.pop("VOXGATE_DATA_DIR", None)
    else:
        os.environ["VOXGATE_DATA_DIR"] = saved


@pytest.fixture
def database_url(tmp_path: Any, start_server: Any) -> Iterator[str]:
    """A fresh, empty database for one test: SQLite in a temporary directory, or, when
    VOXGATE_TEST_DATABASE_URL names a PostgreSQL server (CI), a new database created there
    and dropped afterwards — after the test's servers stopped, so none of them polls a
    database that is gone."""
    base = os.environ.get("VOXGATE_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}"
        return
    import asyncio
    import uuid

    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"voxgate_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = url.set(drivername="postgresql", database=url.database or "postgres")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn.render_as_string(hide_password=False))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        start_server.stop_all()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
