"""The OpenAI Agents SDK (`agents.realtime.RealtimeRunner`) runs an agent on voxgate: the
agent calls a function tool, receives its output, and the response continues."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from conftest import RunningServer

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather for a city."""
    calls.append(city)
    return f"It is sunny and 21 degrees in {city}."


async def test_agent_calls_a_tool_and_continues(voxgate_server: RunningServer) -> None:
    calls.clear()
    agent = RealtimeAgent(
        name="Assistant", instructions="Help with the weather.", tools=[get_weather]
    )
    runner = RealtimeRunner(agent)
    session = await runner.run(
        model_config={"url": voxgate_server.ws_url + "?model=gpt-realtime", "api_key": "sk-test"}
    )
    seen: list[Any] = []
    errors: list[Any] = []
    async with session:
        await session.send_message("What is the get weather for Paris?")
        async with asyncio.timeout(30):
            async for event in session:
                seen.append(event)
                if event.type == "error":
                    errors.append(event.error)
                if event.type == "raw_model_event" and event.data.type == "error":
                    errors.append(event.data)
                # Two turns: the one that calls the tool, then the one that speaks its result.
                # The SDK sends the tool output before it reports tool_end, so the second
                # turn's events may come before or after tool_end.
                ends = sum(e.type == "agent_end" for e in seen)
                if ends >= 2 and any(e.type == "tool_end" for e in seen):
                    break
    assert not errors, errors
    assert calls == ["Paris"]
    tool_end = next(e for e in seen if e.type == "tool_end")
    assert tool_end.tool.name == "get_weather"
    assert "sunny and 21 degrees in Paris" in tool_end.output
    # After the tool result the model spoke again, and what it said uses the result.
    tool_start = next(e for e in seen if e.type == "tool_start")
    assert any(e.type == "audio" for e in seen[seen.index(tool_start) :])
    history = session._history
    spoken = [
        part.transcript
        for item in history
        if getattr(item, "role", None) == "assistant"
        for part in item.content
        if getattr(part, "transcript", None)
    ]
    assert any("sunny and 21 degrees in Paris" in text for text in spoken), spoken
