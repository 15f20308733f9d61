"""Language model over any OpenAI-compatible Chat Completions endpoint.

One client for every server people run: OpenAI, vLLM, Ollama, llama.cpp server, LM Studio.
Requests stream (``stream=True``); text and tool-call pieces are forwarded as they arrive and
one ``LLMDone`` closes every answer. Failures become ``EngineError(origin="llm")`` in one
place, ``classify_error``, with a message that says what to fix.

Servers differ in small ways, handled here rather than in the session:

- ``stream_options`` (usage in the last chunk) is rejected by some servers with a 400; the
  engine then retries once without it and stops sending it.
- ``max_tokens`` rather than ``max_completion_tokens``: every compatible server accepts it.
- Some servers report ``finish_reason="stop"`` after a tool call, or omit the call id; the
  engine reports "tool_calls" whenever a call was made and makes up an id when none came.
- ``parallel_tool_calls`` and ``reasoning_effort`` are sent only when the client set them, so
  servers that do not know them are not troubled otherwise. A model that refuses them, or
  refuses images, gets an error naming the client setting (or ``VOXGATE_LLM_MODEL``).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from openai import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenAI,
    AsyncStream,
    BadRequestError,
    OpenAIError,
    omit,
)
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from voxgate.engines.base import ChatRequest, LLMDone, LLMEvent, TextDelta, ToolCallDelta, ToolSpec
from voxgate.engines.errors import EngineError

log = logging.getLogger(__name__)

# How servers word a request over the model's context window (OpenAI and vLLM, llama.cpp,
# Ollama's OpenAI layer).
_CONTEXT_TOO_LONG = ("context length", "context_length", "context window", "too many tokens")
# Local servers (Ollama, llama.cpp, vLLM without --api-key) ignore the key, but the SDK
# insists on one and would otherwise read OPENAI_API_KEY from the environment.
NO_API_KEY = "not-needed"


class OpenAIChatLLM:
    """``LLMEngine`` for an OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` includes the version prefix (``http://localhost:11434/v1``); ``timeout`` bounds
    connecting and every wait for the next piece of the stream, in seconds. Retries are the
    caller's decision (errors say whether they are ``retryable``), so the SDK's own retries are
    off unless ``max_retries`` asks for them.
    """

    name = "openai-chat"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        stream_usage: bool = True,
        max_retries: int = 0,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self._stream_usage = stream_usage
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or NO_API_KEY,
            timeout=timeout,
            max_retries=max_retries,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        """Stream one answer; closing the iterator closes the HTTP response at once."""
        answer = _Answer()
        chunks = await self._open(request)
        try:
            async for chunk in chunks:
                for event in answer.feed(chunk):
                    yield event
        except (OpenAIError, ValueError) as exc:  # ValueError: a data line that is not JSON
            raise self._error(exc) from exc
        finally:
            await chunks.close()
        yield answer.done(self.base_url)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def _open(self, request: ChatRequest) -> AsyncStream[ChatCompletionChunk]:
        try:
            try:
                return await self._create(request, usage=self._stream_usage)
            except BadRequestError as exc:
                if not (self._stream_usage and _mentions_stream_options(exc)):
                    raise
                log.info(
                    "%s rejects stream_options; token usage will not be reported", self.base_url
                )
                self._stream_usage = False
                return await self._create(request, usage=False)
        except BadRequestError as exc:
            raise self._refused(exc, request) from exc
        except OpenAIError as exc:
            raise self._error(exc) from exc

    def _refused(self, exc: BadRequestError, request: ChatRequest) -> EngineError:
        """A 400 for a request that used an optional capability: say which setting."""
        detail = _server_message(exc)
        where = f"LLM endpoint {self.base_url} rejected the request ({detail})"
        if request.reasoning_effort is not None and "reasoning" in detail.lower():
            return _llm_error(
                f"{where} — model {self.model!r} does not take reasoning.effort; remove "
                "'reasoning' from the session or response, or configure a reasoning model",
                retryable=False,
            )
        if request.parallel_tool_calls is not None and "parallel" in detail.lower():
            return _llm_error(
                f"{where} — model {self.model!r} does not take parallel_tool_calls; remove it "
                "from the session or response",
                retryable=False,
            )
        if any(words in detail.lower() for words in _CONTEXT_TOO_LONG):
            return _llm_error(
                f"{where} — the conversation is longer than model {self.model!r} takes: set "
                "VOXGATE_LLM_CONTEXT_TOKENS to its context window, so that the session's "
                "truncation ('auto' by default) trims what is sent",
                retryable=False,
            )
        if has_images(request):
            return _llm_error(
                f"{where} — the conversation holds an image (input_image), and "
                f"VOXGATE_LLM_MODEL={self.model!r} may not accept images: configure a vision "
                "model (docs/protocol.md lists some) or send no images",
                retryable=False,
            )
        return self._error(exc)

    async def _create(
        self, request: ChatRequest, *, usage: bool
    ) -> AsyncStream[ChatCompletionChunk]:
        tools = [tool_param(tool) for tool in request.tools]
        return await self._client.chat.completions.create(
            model=self.model,
            messages=chat_messages(request),
            stream=True,
            # Servers disagree on tool_choice without tools; send neither when there are none.
            tools=tools or omit,
            tool_choice=tool_choice_param(request.tool_choice) if tools else omit,
            max_tokens=omit if request.max_output_tokens is None else request.max_output_tokens,
            stream_options={"include_usage": True} if usage else omit,
            parallel_tool_calls=(
                request.parallel_tool_calls
                if tools and request.parallel_tool_calls is not None
                else omit
            ),
            reasoning_effort=cast(Any, request.reasoning_effort) or omit,
        )

    def _error(self, exc: Exception) -> EngineError:
        return classify_error(exc, base_url=self.base_url, model=self.model)


# ---------------------------------------------------------------------------------------------
# Request: ChatRequest → Chat Completions parameters
# ---------------------------------------------------------------------------------------------


def chat_messages(request: ChatRequest) -> list[ChatCompletionMessageParam]:
    """The instructions as a system message, then the conversation unchanged."""
    system: list[dict[str, Any]] = []
    if request.instructions:
        system = [{"role": "system", "content": request.instructions}]
    # ChatMessage already has the Chat Completions shape; the SDK's TypedDicts just say so.
    return cast(list[ChatCompletionMessageParam], system + list(request.messages))


def has_images(request: ChatRequest) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(p.get("type") == "image_url" for p in m["content"])
        for m in request.messages
    )


def tool_param(tool: ToolSpec) -> ChatCompletionFunctionToolParam:
    """A tool in the ``{"type": "function", "function": {...}}`` shape."""
    # Some servers (llama.cpp, vLLM's guided decoding) fail on an empty schema.
    parameters = tool.parameters or {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": parameters},
    }


def tool_choice_param(choice: str) -> ChatCompletionToolChoiceOptionParam:
    """Pass "auto", "none" and "required" through; any other value names one function."""
    if choice in ("auto", "none", "required"):
        return cast(Literal["auto", "none", "required"], choice)
    return {"type": "function", "function": {"name": choice}}


# ---------------------------------------------------------------------------------------------
# Response: chunks → events
# ---------------------------------------------------------------------------------------------


@dataclass
class _Answer:
    """What has been seen of one streamed answer."""

    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    calls: set[int] = field(default_factory=set)

    def feed(self, chunk: ChatCompletionChunk) -> Iterator[LLMEvent]:
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        # `choices` is empty on the usage chunk, and null from a few servers.
        for choice in chunk.choices or []:
            if choice.delta.content:
                yield TextDelta(choice.delta.content)
            for position, call in enumerate(choice.delta.tool_calls or []):
                yield self._tool_delta(call, position)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _tool_delta(self, call: ChoiceDeltaToolCall, position: int) -> ToolCallDelta:
        # A few servers omit `index` when every call arrives whole in one chunk.
        index = call.index if call.index is not None else position
        arguments = (call.function.arguments if call.function else None) or ""
        if index in self.calls:
            # Some servers repeat id and name on every piece; the contract is first piece only.
            return ToolCallDelta(index=index, arguments=arguments)
        self.calls.add(index)
        return ToolCallDelta(
            index=index,
            arguments=arguments,
            call_id=call.id or f"call_{uuid.uuid4().hex[:24]}",
            name=call.function.name if call.function else None,
        )

    def done(self, base_url: str) -> LLMDone:
        if self.finish_reason is None:
            raise EngineError(
                f"LLM endpoint {base_url} ended the stream before the answer was finished "
                "(no finish_reason) — the server may have crashed or dropped the connection",
                origin="llm",
                retryable=True,
            )
        return LLMDone(
            finish_reason=_finish_reason(self.finish_reason, made_calls=bool(self.calls)),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )


def _finish_reason(reason: str, *, made_calls: bool) -> Literal["stop", "length", "tool_calls"]:
    if reason == "length":
        return "length"
    if reason in ("tool_calls", "function_call") or made_calls:
        return "tool_calls"
    # "stop", "content_filter" and server-specific reasons ("eos", "end_turn") all end the turn.
    return "stop"


# ---------------------------------------------------------------------------------------------
# Errors: the one place where SDK failures become EngineError
# ---------------------------------------------------------------------------------------------


def classify_error(exc: Exception, *, base_url: str, model: str) -> EngineError:
    """Turn an SDK failure into an ``EngineError`` that says whether to retry and what to fix.

    Unreachable servers, timeouts, 408/409/429 and 5xx are retryable; bad keys, unknown models
    and other 4xx are not.
    """
    where = f"LLM endpoint {base_url}"
    if isinstance(exc, APITimeoutError):
        return _llm_error(
            f"{where} timed out — the server is slow, overloaded or stuck; check it, "
            "or raise the LLM timeout",
            retryable=True,
        )
    if isinstance(exc, APIConnectionError):
        reason = _connection_reason(exc)
        return _llm_error(f"{where} unreachable: {reason} — check VOXGATE_LLM_BASE_URL", True)
    if isinstance(exc, APIStatusError):
        return _status_error(exc.status_code, _server_message(exc), where, model)
    if isinstance(exc, APIError):
        # An error event inside an accepted stream: the server failed while answering.
        return _llm_error(f"{where} failed while answering: {exc.message}", retryable=True)
    if isinstance(exc, ValueError):
        return _llm_error(
            f"{where} sent something that is not a Chat Completions stream ({exc}) — check "
            "that VOXGATE_LLM_BASE_URL points at an OpenAI-compatible API",
            retryable=False,
        )
    return _llm_error(f"{where}: {exc}", retryable=False)


def _status_error(status: int, detail: str, where: str, model: str) -> EngineError:
    if status in (401, 403):
        return _llm_error(
            f"{where} refused the API key ({status}: {detail}) — check VOXGATE_LLM_API_KEY",
            retryable=False,
        )
    if status == 404:
        return _llm_error(
            f"{where} answered 404 for model {model!r} ({detail}) — check VOXGATE_LLM_MODEL, "
            "and that VOXGATE_LLM_BASE_URL includes the /v1 prefix",
            retryable=False,
        )
    if status == 429:
        return _llm_error(f"{where} is rate limiting ({detail}) — try again later", True)
    if status in (408, 409) or status >= 500:
        return _llm_error(f"{where} failed with HTTP {status}: {detail}", retryable=True)
    return _llm_error(f"{where} rejected the request (HTTP {status}): {detail}", retryable=False)


def _llm_error(message: str, retryable: bool) -> EngineError:
    return EngineError(message, origin="llm", retryable=retryable)


def _server_message(exc: APIStatusError) -> str:
    """The server's own words: OpenAI/vLLM send {"error": {"message"}}, Ollama {"error": "…"}."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)
    return str(body) if body else exc.response.reason_phrase


def _connection_reason(exc: APIConnectionError) -> str:
    cause: BaseException | None = exc
    for _ in range(10):  # bounded: exception chains can loop
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError) or "Connection refused" in str(cause):
            return "connection refused (is the server running on that port?)"
        if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause):
            return "host name not found"
        cause = cause.__cause__ or cause.__context__
    return str(exc.__cause__ or exc)


def _mentions_stream_options(exc: BadRequestError) -> bool:
    return "stream_options" in f"{exc.message} {exc.body}"
