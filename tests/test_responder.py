"""The built-in responder: honest echo replies and deterministic tool calls, offline."""

from __future__ import annotations

import json
from typing import Any

from voxgate.engines.base import (
    ChatMessage,
    ChatRequest,
    LLMDone,
    LLMEngine,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.tokens import count_tokens

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "note": {"type": "string"},
        },
        "required": ["city", "days", "metric", "unit"],
    },
)
LOOKUP = ToolSpec(
    name="lookup_order",
    parameters={
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
    },
)


def user(text: str) -> ChatMessage:
    return {"role": "user", "content": text}


async def run(
    *messages: ChatMessage, tools: list[ToolSpec] | None = None, **fields: Any
) -> list[LLMEvent]:
    request = ChatRequest(instructions="", messages=list(messages), tools=tools or [], **fields)
    return [event async for event in BuiltinResponder().stream(request)]


def spoken(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def last(events: list[LLMEvent]) -> LLMDone:
    """The one LLMDone, which must close the stream."""
    assert [isinstance(e, LLMDone) for e in events].count(True) == 1
    assert isinstance(events[-1], LLMDone)
    return events[-1]


def finish(events: list[LLMEvent]) -> str:
    return last(events).finish_reason


def the_call(events: list[LLMEvent]) -> tuple[str | None, dict[str, Any]]:
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0}
    assert deltas[0].call_id and deltas[0].call_id.startswith("call_")
    return deltas[0].name, json.loads("".join(d.arguments for d in deltas))


def test_is_an_llm_engine() -> None:
    engine: LLMEngine = BuiltinResponder()  # mypy checks the signatures
    assert isinstance(engine, LLMEngine)


async def test_echoes_the_user_and_explains_how_to_add_a_model() -> None:
    events = await run(user("What time is it?"))

    text = spoken(events)
    assert text.startswith("You said: What time is it? ")
    assert "built-in responder" in text
    assert "No language model is configured" in text
    for setting in ("VOXGATE_LLM_BASE_URL", "VOXGATE_LLM_MODEL", "VOXGATE_LLM_API_KEY"):
        assert setting in text
    assert "OpenAI-compatible Chat Completions endpoint" in text
    assert finish(events) == "stop"


async def test_streams_word_by_word() -> None:
    events = await run(user("hello there"))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 20
    assert all(len(d.text.split()) == 1 for d in deltas)
    assert finish(events) == "stop"


async def test_echoes_the_last_user_message_and_transcripts_of_audio() -> None:
    audio_turn: ChatMessage = {
        "role": "user",
        "content": [{"type": "input_audio", "transcript": "turn on the lights"}],
    }
    events = await run(user("first"), {"role": "assistant", "content": "ok"}, audio_turn)
    assert spoken(events) == "You said: turn on the lights."


async def test_the_setup_hint_comes_once_per_conversation() -> None:
    first = spoken(await run(user("Hello there")))
    assert "VOXGATE_LLM_BASE_URL" in first
    again = spoken(
        await run(
            user("Hello there"),
            {"role": "assistant", "content": first},
            user("What time does the bank open?"),
        )
    )
    assert again == "You said: What time does the bank open?"


async def test_says_so_when_it_heard_nothing() -> None:
    assert spoken(await run()).startswith("I did not catch any words.")


async def test_reports_token_usage() -> None:
    events = await run(user("Please count these words"))
    done = last(events)
    assert done.input_tokens is not None and done.input_tokens >= count_tokens("Please count")
    assert done.output_tokens == count_tokens(spoken(events))


async def test_stops_at_max_output_tokens() -> None:
    events = await run(user("hello"), max_output_tokens=5)
    assert finish(events) == "length"
    assert last(events).output_tokens == count_tokens(spoken(events)) <= 5
    assert spoken(events).startswith("You said:")


async def test_calls_a_tool_named_in_the_users_words() -> None:
    events = await run(user("Please get weather in Paris."), tools=[LOOKUP, WEATHER])

    name, arguments = the_call(events)
    assert name == "get_weather"
    # Required only: strings from the words after "in", numbers 0, booleans false, enum's first.
    assert arguments == {"city": "Paris", "days": 0, "metric": False, "unit": "celsius"}
    assert finish(events) == "tool_calls"
    assert not spoken(events)


async def test_uses_the_whole_utterance_when_there_is_no_topic_word() -> None:
    events = await run(user("lookup_order 12345"), tools=[WEATHER, LOOKUP])
    assert the_call(events) == ("lookup_order", {"order": "lookup_order 12345"})


async def test_does_not_call_tools_the_user_did_not_name() -> None:
    events = await run(user("How are you?"), tools=[WEATHER])
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    assert spoken(events).startswith("You said: How are you?")


async def test_tool_choice_none_never_calls() -> None:
    events = await run(user("get weather in Rome"), tools=[WEATHER], tool_choice="none")
    assert spoken(events).startswith("You said:")
    assert finish(events) == "stop"


async def test_required_tool_choice_calls_a_tool_even_unnamed() -> None:
    events = await run(user("anything about cats"), tools=[LOOKUP, WEATHER], tool_choice="required")
    assert the_call(events) == ("lookup_order", {"order": "cats"})


async def test_named_tool_choice_calls_that_function() -> None:
    events = await run(user("hi"), tools=[LOOKUP, WEATHER], tool_choice="get_weather")
    name, arguments = the_call(events)
    assert name == "get_weather"
    assert arguments["city"] == "hi"


async def test_reads_out_a_tool_result() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    events = await run(
        user("get weather in Paris"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees"},
        tools=[WEATHER],
    )
    assert spoken(events) == "The get_weather tool answered: Sunny, 24 degrees."
    assert finish(events) == "stop"
