"""What reaches the language model: images in the Chat Completions image format, and the
client's ``parallel_tool_calls`` and ``reasoning.effort``; a model that refuses them fails the
response with an error naming the setting."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai import AsyncOpenAI

from _helpers_protocol import plan_of, send, started
from _realtime import Events
from conftest import RunningServer, SlowChatServer
from voxgate.engines.openai_chat import OpenAIChatLLM
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.context import chat_request
from voxgate.session.engines import EngineSet

PIXEL = (  # one white pixel
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
IMAGE_ITEM = {
    "type": "message",
    "role": "user",
    "content": [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PIXEL, "detail": "low"},
    ],
}
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def test_images_become_image_url_parts_in_order() -> None:
    conn = started()
    send(conn, "conversation.item.create", item=IMAGE_ITEM)
    request = chat_request(plan_of(send(conn, "response.create")))
    assert request.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
            ],
        }
    ]


def test_settings_pass_through_and_responses_override() -> None:
    conn = started()
    session = {"type": "realtime", "parallel_tool_calls": False, "reasoning": {"effort": "low"}}
    send(conn, "session.update", session=session)
    plan = plan_of(send(conn, "response.create"))
    request = chat_request(plan)
    assert (request.parallel_tool_calls, request.reasoning_effort) == (False, "low")
    conn.finish_response(plan.response_id)
    response = {"parallel_tool_calls": True, "reasoning": {"effort": "high"}}
    request = chat_request(plan_of(send(conn, "response.create", response=response)))
    assert (request.parallel_tool_calls, request.reasoning_effort) == (True, "high")


def test_unset_settings_send_nothing() -> None:
    request = chat_request(plan_of(send(started(), "response.create")))
    assert (request.parallel_tool_calls, request.reasoning_effort) == (None, None)


# -- over HTTP, through the SDK -----------------------------------------------------------


@pytest.fixture
def chat() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.0, script=[({"content": "A white pixel."}, "stop")])
    yield server
    server.stop()


def served(start_server: Any, url: str) -> RunningServer:
    llm = OpenAIChatLLM(base_url=url, model="text-only-model")
    server: RunningServer = start_server(EngineSet(llm=llm, tts=ScriptedTTS()))
    return server


async def ask(server: RunningServer, session: dict[str, Any]) -> list[Any]:
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], **session}
        )
        await events.expect("session.updated")
        await conn.conversation.item.create(item=IMAGE_ITEM)  # type: ignore[arg-type]
        await events.until("conversation.item.done")
        await conn.response.create()
        return await events.until("response.done")


async def test_the_model_gets_the_image_and_the_settings(
    start_server: Any, chat: SlowChatServer
) -> None:
    session = {"tools": [TOOL], "parallel_tool_calls": False, "reasoning": {"effort": "minimal"}}
    seen = await ask(served(start_server, chat.url), session)
    assert seen[-1].response.status == "completed"
    [body] = chat.requests
    assert body["messages"][-1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": PIXEL, "detail": "low"},
    }
    assert body["parallel_tool_calls"] is False
    assert body["reasoning_effort"] == "minimal"


class RefusingChatServer:
    """A Chat Completions endpoint that refuses every request with a 400 in the OpenAI error
    shape (what OpenAI and vLLM answer), saying ``message``."""

    def __init__(self, message: str = "image input is not supported for this model") -> None:
        outer = self
        self.requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                error = {"message": message, "type": "invalid_request_error"}
                data = json.dumps({"error": error})
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


async def test_a_model_that_refuses_images_names_the_setting(start_server: Any) -> None:
    refusing = RefusingChatServer()
    try:
        seen = await ask(served(start_server, refusing.url), {})
    finally:
        refusing.httpd.shutdown()
        refusing.httpd.server_close()
    [error] = [e for e in seen if e.type == "error"]
    assert error.error.code == "llm_error"
    message = error.error.message
    assert "VOXGATE_LLM_MODEL='text-only-model'" in message and "input_image" in message
    assert "image input is not supported" in message  # the model's own words
    done = seen[-1].response
    assert done.status == "failed" and done.status_details.error.message == message


async def test_an_over_long_context_names_the_window_setting(start_server: Any) -> None:
    refusing = RefusingChatServer(
        "This model's maximum context length is 4096 tokens. However, your messages resulted "
        "in 5000 tokens. Please reduce the length of the messages."
    )
    try:
        seen = await ask(served(start_server, refusing.url), {})
    finally:
        refusing.httpd.shutdown()
        refusing.httpd.server_close()
    [error] = [e for e in seen if e.type == "error"]
    assert "VOXGATE_LLM_CONTEXT_TOKENS" in error.error.message
    assert "maximum context length is 4096" in error.error.message
