"""OpenAIChatLLM against a real HTTP server speaking the Chat Completions SSE wire format."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from voxgate.engines.base import (
    ChatRequest,
    LLMDone,
    LLMEngine,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from voxgate.engines.errors import EngineError
from voxgate.engines.openai_chat import OpenAIChatLLM

Reply = Callable[["_Handler"], None]

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


# ---------------------------------------------------------------------------------------------
# The fake server: real sockets, real HTTP/1.1 chunked SSE, scripted replies
# ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ChatServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(json.loads(body))
        self.server.headers.append(self.headers)
        reply = self.server.replies.pop(0)
        try:
            reply(self)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()
            self.close_connection = True

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[Message] = []
        self.replies: list[Reply] = []
        self.disconnected = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        **chunk(),
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def sse(*chunks: dict[str, Any], done: bool = True, delay: float = 0.0) -> Reply:
    """A 200 event stream of ``chunks``, ending with ``data: [DONE]`` unless ``done`` is False."""

    def reply(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for item in chunks:
            handler.write_chunk(f"data: {json.dumps(item)}\n\n".encode())
            time.sleep(delay)
        if done:
            handler.write_chunk(b"data: [DONE]\n\n")
        handler.write_chunk(b"")

    return reply


def endless_text() -> Reply:
    """Streams a word every 20 ms for up to 5 s: only a client disconnect ends it early."""

    def reply(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(250):
            handler.write_chunk(f"data: {json.dumps(chunk({'content': 'word '}))}\n\n".encode())
            time.sleep(0.02)

    return reply


def error(status: int, body: dict[str, Any]) -> Reply:
    def reply(handler: _Handler) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def stall(seconds: float) -> Reply:
    def reply(handler: _Handler) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return reply


@pytest.fixture
def server() -> Iterator[_ChatServer]:
    srv = _ChatServer()
    # A short poll interval keeps shutdown (and so each test) fast.
    thread = threading.Thread(
        target=srv.serve_forever, args=(0.02,), name="fake-chat-server", daemon=True
    )
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
async def llm(server: _ChatServer) -> AsyncIterator[OpenAIChatLLM]:
    engine = OpenAIChatLLM(base_url=server.base_url, model="test-model", api_key="sk-test")
    yield engine
    await engine.aclose()


async def collect(engine: OpenAIChatLLM, request: ChatRequest) -> list[LLMEvent]:
    return [event async for event in engine.stream(request)]


async def failure(engine: OpenAIChatLLM, request: ChatRequest) -> EngineError:
    with pytest.raises(EngineError) as info:
        await collect(engine, request)
    assert info.value.origin == "llm"
    return info.value


def hello(**overrides: Any) -> ChatRequest:
    fields: dict[str, Any] = {
        "instructions": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
    }
    return ChatRequest(**(fields | overrides))


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


async def test_is_an_llm_engine() -> None:
    engine: LLMEngine = OpenAIChatLLM(base_url="http://127.0.0.1:1/v1", model="m")
    assert isinstance(engine, LLMEngine)
    await engine.aclose()


async def test_streams_text_and_reports_usage(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(
        sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo!"}),
            chunk({}, finish="stop"),
            usage_chunk(12, 2),
        )
    )

    events = await collect(llm, hello())

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo!"),
        LLMDone(finish_reason="stop", input_tokens=12, output_tokens=2),
    ]
    sent = server.requests[0]
    assert sent["model"] == "test-model"
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    # No tools: neither tools nor tool_choice is sent; no limit: no max_tokens.
    assert "tools" not in sent
    assert "tool_choice" not in sent
    assert "max_tokens" not in sent
    assert server.headers[0]["authorization"] == "Bearer sk-test"


async def test_streams_a_tool_call_split_over_chunks(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    first = {"index": 0, "id": "call_abc", "type": "function"}
    server.replies.append(
        sse(
            chunk({"tool_calls": [first | {"function": {"name": "get_weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]}),
            chunk({}, finish="tool_calls"),
        )
    )
    request = hello(
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="get_weather",
        max_output_tokens=50,
    )

    events = await collect(llm, request)

    assert events[0] == ToolCallDelta(index=0, arguments="", call_id="call_abc", name="get_weather")
    assert all(isinstance(e, ToolCallDelta) and e.name is None for e in events[1:-1])
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert json.loads(arguments) == {"city": "Paris"}
    assert events[-1] == LLMDone(finish_reason="tool_calls")
    sent = server.requests[0]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["max_tokens"] == 50


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_passes_plain_tool_choices_through(
    server: _ChatServer, llm: OpenAIChatLLM, choice: str
) -> None:
    server.replies.append(sse(chunk({"content": "ok"}, finish="stop")))
    await collect(llm, hello(tools=[ToolSpec(name="ping")], tool_choice=choice))
    sent = server.requests[0]
    assert sent["tool_choice"] == choice
    # An empty schema is replaced by an empty object schema that every server accepts.
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


async def test_parallel_calls_and_a_server_that_says_stop_after_calling(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    # Ollama-style: each call whole in one chunk, finish_reason "stop", no call id on one.
    server.replies.append(
        sse(
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "a", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": "{}"}}]}),
            chunk({}, finish="stop"),
        )
    )
    events = await collect(llm, hello(tools=[ToolSpec(name="a"), ToolSpec(name="b")]))

    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.name) for c in calls] == [(0, "a"), (1, "b")]
    assert calls[0].call_id == "c1"
    assert calls[1].call_id  # made up, so the tool result can still be matched to the call
    assert events[-1] == LLMDone(finish_reason="tool_calls")


async def test_length_limit_is_reported(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(sse(chunk({"content": "Once upon"}), chunk({}, finish="length")))
    events = await collect(llm, hello(max_output_tokens=2))
    assert events[-1] == LLMDone(finish_reason="length")


async def test_no_system_message_without_instructions(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    server.replies.append(sse(chunk({"content": "hi"}, finish="stop")))
    await collect(llm, hello(instructions=""))
    assert server.requests[0]["messages"] == [{"role": "user", "content": "Hello"}]


async def test_retries_once_without_stream_options_when_the_server_rejects_them(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    rejection = {"error": {"message": "Unrecognized request argument supplied: stream_options"}}
    server.replies += [
        error(400, rejection),
        sse(chunk({"content": "hi"}, finish="stop")),
        sse(chunk({"content": "again"}, finish="stop")),
    ]

    first = await collect(llm, hello())
    second = await collect(llm, hello())

    assert first == [TextDelta("hi"), LLMDone(finish_reason="stop")]
    assert second == [TextDelta("again"), LLMDone(finish_reason="stop")]
    assert [("stream_options" in r) for r in server.requests] == [True, False, False]


async def test_closing_the_iterator_closes_the_http_stream(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    server.replies.append(endless_text())
    events = llm.stream(hello())
    assert await anext(events) == TextDelta("word ")

    await events.aclose()

    # The server notices within a few of its 20 ms writes, long before its 5 s stream ends.
    assert await asyncio.to_thread(server.disconnected.wait, 2.0)


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


async def test_server_error_is_retryable(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(error(500, {"error": {"message": "CUDA out of memory"}}))
    err = await failure(llm, hello())
    assert err.retryable
    assert server.base_url in err.message
    assert "500" in err.message
    assert "CUDA out of memory" in err.message


async def test_bad_api_key_is_not_retryable(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(error(401, {"error": {"message": "Incorrect API key provided"}}))
    err = await failure(llm, hello())
    assert not err.retryable
    assert "Incorrect API key provided" in err.message
    assert "VOXGATE_LLM_API_KEY" in err.message


async def test_unknown_model_says_which_model(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(error(404, {"error": "model 'test-model' not found"}))  # Ollama shape
    err = await failure(llm, hello())
    assert not err.retryable
    assert "'test-model'" in err.message
    assert "VOXGATE_LLM_MODEL" in err.message


async def test_rate_limit_is_retryable(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(error(429, {"error": {"message": "Too many requests"}}))
    err = await failure(llm, hello())
    assert err.retryable
    assert "rate limiting" in err.message


async def test_other_client_errors_are_not_retryable(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    server.replies.append(error(422, {"error": {"message": "messages: field required"}}))
    err = await failure(llm, hello())
    assert not err.retryable
    assert "422" in err.message
    assert "messages: field required" in err.message


async def test_unreachable_endpoint_is_retryable_and_names_the_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.
    engine = OpenAIChatLLM(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout=5)
    try:
        err = await failure(engine, hello())
    finally:
        await engine.aclose()
    assert err.retryable
    assert f"http://127.0.0.1:{port}/v1 unreachable: connection refused" in err.message
    assert "VOXGATE_LLM_BASE_URL" in err.message


async def test_timeout_is_retryable(server: _ChatServer) -> None:
    server.replies.append(stall(1.0))
    engine = OpenAIChatLLM(base_url=server.base_url, model="m", timeout=0.2)
    try:
        err = await failure(engine, hello())
    finally:
        await engine.aclose()
    assert err.retryable
    assert "timed out" in err.message


async def test_stream_cut_before_the_end_is_an_error(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    server.replies.append(sse(chunk({"content": "Half an ans"}), done=False))
    received: list[LLMEvent] = []
    with pytest.raises(EngineError) as info:
        async for event in llm.stream(hello()):
            received.append(event)
    assert received == [TextDelta("Half an ans")]
    assert info.value.retryable
    assert "before the answer was finished" in info.value.message


async def test_error_event_inside_the_stream(server: _ChatServer, llm: OpenAIChatLLM) -> None:
    server.replies.append(
        sse(chunk({"content": "Sure"}), {"error": {"message": "engine crashed"}}, done=False)
    )
    err = await failure(llm, hello())
    assert err.retryable
    assert "engine crashed" in err.message


async def test_a_stream_that_is_not_json_is_a_configuration_error(
    server: _ChatServer, llm: OpenAIChatLLM
) -> None:
    def reply(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.write_chunk(b"data: <html>not an API</html>\n\n")
        handler.write_chunk(b"")

    server.replies.append(reply)
    err = await failure(llm, hello())
    assert not err.retryable
    assert "not a Chat Completions stream" in err.message
