"""The built-in responder: the language model used when none is configured.

It makes the whole voice loop work offline and says plainly what it is: it repeats what the
user said and, in its first answer of a conversation, explains how to connect a real model;
later answers are one sentence. It also calls tools deterministically, so
the Realtime function-calling path can be exercised with no model at all:

- ``tool_choice`` names a function: it calls that function;
- ``tool_choice`` is "required": it calls the tool the user named, else the first tool;
- otherwise, after a tool result, it reads the result out;
- otherwise, when the user's last words name a tool ("get weather", "get_weather"), it calls it.

Arguments come from the tool's JSON schema: required strings get the words after "for", "in"
or "about" (else the whole utterance), numbers 0, booleans false.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from voxgate.engines.base import (
    ChatMessage,
    ChatRequest,
    LLMDone,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from voxgate.engines.tokens import count_tokens

SETUP_HINT = (
    "I am voxgate's built-in responder. No language model is configured, so I can only repeat "
    "what I hear. To add one, set VOXGATE_LLM_BASE_URL and VOXGATE_LLM_MODEL, and "
    "VOXGATE_LLM_API_KEY if it needs a key, to any OpenAI-compatible Chat Completions endpoint."
)

_TOPIC = re.compile(r"\b(?:for|in|about)\s+(.+)", re.IGNORECASE | re.DOTALL)


class BuiltinResponder:
    """``LLMEngine`` that echoes the user and explains how to configure a real model."""

    name = "builtin-responder"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        """Answer ``request`` word by word, or call a tool; always ends with one ``LLMDone``."""
        input_tokens = count_tokens(_request_text(request))
        tool = _tool_to_call(request)
        if tool is not None:
            async for event in _call(tool, _last_user_text(request.messages), input_tokens):
                yield event
            return
        async for event in _say(_reply(request.messages), request.max_output_tokens, input_tokens):
            yield event

    async def aclose(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------------------
# What to do
# ---------------------------------------------------------------------------------------------


def _tool_to_call(request: ChatRequest) -> ToolSpec | None:
    if not request.tools or request.tool_choice == "none":
        return None
    if request.tool_choice == "required":
        return _named_in(_last_user_text(request.messages), request.tools) or request.tools[0]
    if request.tool_choice != "auto":
        named = [tool for tool in request.tools if tool.name == request.tool_choice]
        return named[0] if named else ToolSpec(name=request.tool_choice)
    last = request.messages[-1] if request.messages else {}
    if last.get("role") != "user":
        return None
    return _named_in(_text_of(last), request.tools)


def _named_in(text: str, tools: list[ToolSpec]) -> ToolSpec | None:
    """The first tool whose name appears in ``text``; underscores may be spoken as spaces."""
    spoken = text.lower()
    for tool in tools:
        name = tool.name.lower()
        if name in spoken or name.replace("_", " ") in spoken:
            return tool
    return None


def _reply(messages: list[ChatMessage]) -> str:
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        tool = _tool_name(messages, last.get("tool_call_id"))
        return f"The {tool} tool answered: {_sentence(_text_of(last))}"
    heard = _last_user_text(messages)
    # The setup hint once per conversation, in the first answer; later answers are a sentence.
    hint = "" if any(m.get("role") == "assistant" for m in messages) else f" {SETUP_HINT}"
    if not heard:
        return f"I did not catch any words.{hint}"
    return f"You said: {_sentence(heard)}{hint}"


def tool_arguments(tool: ToolSpec, text: str) -> dict[str, Any]:
    """Arguments for ``tool``'s required parameters, filled from the user's ``text``."""
    properties: dict[str, Any] = tool.parameters.get("properties", {})
    topic = _topic(text)
    arguments: dict[str, Any] = {}
    for key in tool.parameters.get("required", []):
        schema = properties.get(key, {})
        if "enum" in schema:
            arguments[key] = schema["enum"][0]  # any listed value is valid; take the first
        elif _kind(schema) == "string":
            arguments[key] = topic
        else:
            arguments[key] = _empty_value(_kind(schema))
    return arguments


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"] and the like
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _empty_value(kind: str) -> Any:
    # Built per call: the caller may mutate the returned lists and dicts.
    return {"number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}.get(kind)


def _topic(text: str) -> str:
    match = _TOPIC.search(text)
    return (match.group(1) if match else text).strip().rstrip(".?!").strip()


# ---------------------------------------------------------------------------------------------
# Emitting events
# ---------------------------------------------------------------------------------------------


async def _say(text: str, limit: int | None, input_tokens: int) -> AsyncGenerator[LLMEvent, None]:
    spoken: list[str] = []
    # Counted word by word (recounting the whole reply per word would be quadratic); a sum
    # of the pieces' counts is not below the count of the whole in practice, so the limit
    # holds (and the reported count is exact).
    used = 0
    for word in re.findall(r"\s*\S+", text):
        cost = count_tokens(word) if limit is not None else 0
        if limit is not None and used + cost > limit:
            output_tokens = count_tokens("".join(spoken))
            yield LLMDone("length", input_tokens=input_tokens, output_tokens=output_tokens)
            return
        used += cost
        spoken.append(word)
        yield TextDelta(word)
        # Give the loop a turn per word, as a real stream would, so cancellation can land.
        await asyncio.sleep(0)
    yield LLMDone("stop", input_tokens=input_tokens, output_tokens=count_tokens("".join(spoken)))


async def _call(tool: ToolSpec, text: str, input_tokens: int) -> AsyncGenerator[LLMEvent, None]:
    arguments = json.dumps(tool_arguments(tool, text))
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    # Arguments in two pieces, so consumers exercise the same accumulation as with real models.
    half = len(arguments) // 2
    yield ToolCallDelta(index=0, call_id=call_id, name=tool.name)
    yield ToolCallDelta(index=0, arguments=arguments[:half])
    await asyncio.sleep(0)
    yield ToolCallDelta(index=0, arguments=arguments[half:])
    output_tokens = count_tokens(tool.name + arguments)
    yield LLMDone("tool_calls", input_tokens=input_tokens, output_tokens=output_tokens)


# ---------------------------------------------------------------------------------------------
# Reading messages
# ---------------------------------------------------------------------------------------------


def _text_of(message: ChatMessage) -> str:
    """The text of a message: a string, or the text/transcript of its content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return ""
    pieces = [_part_text(part) for part in content if isinstance(part, dict)]
    return " ".join(piece for piece in pieces if piece)


def _part_text(part: dict[str, Any]) -> str:
    text = part.get("text") or part.get("transcript") or ""
    return text.strip() if isinstance(text, str) else ""


def _tool_name(messages: list[ChatMessage], call_id: object) -> str:
    """The name of the function whose call ``call_id`` answers, from the assistant's calls."""
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return str(call.get("function", {}).get("name", "requested"))
    return "requested"


def _last_user_text(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message)
    return ""


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _request_text(request: ChatRequest) -> str:
    tools = [json.dumps([t.name, t.description, t.parameters]) for t in request.tools]
    messages = [_text_of(m) for m in request.messages]
    return "\n".join([request.instructions, *messages, *tools])
