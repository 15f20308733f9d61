"""The OpenAI Agents SDK as a client: the weather agent that the agent tests run, the question
that makes it call its tool, and what the assistant said."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeSession

calls: list[str] = []  # the cities get_weather was asked about; a test clears it first


@function_tool
def get_weather(city: str) -> str:
    """The current weather for a city."""
    calls.append(city)
    return f"It is sunny and 21 degrees in {city}."


def weather_agent() -> RealtimeAgent[Any]:
    """An agent whose one tool is `get_weather` (recorded in `calls`)."""
    return RealtimeAgent(
        name="Assistant", instructions="Help with the weather.", tools=[get_weather]
    )


async def ask_the_weather_in_paris(session: RealtimeSession) -> tuple[list[Any], list[Any]]:
    """Ask the agent about Paris and read the session's events until both of its turns have
    ended: the one that calls the tool, then the one that speaks its result. Returns every
    event read and the errors among them."""
    seen: list[Any] = []
    errors: list[Any] = []
    await session.send_message("What is the get weather for Paris?")
    async with asyncio.timeout(30):
        async for event in session:
            seen.append(event)
            if event.type == "error":
                errors.append(event.error)
            if event.type == "raw_model_event" and event.data.type == "error":
                errors.append(event.data)
            # The SDK sends the tool output before it reports tool_end, so the second
            # turn's events may come before or after tool_end.
            ends = sum(e.type == "agent_end" for e in seen)
            if ends >= 2 and any(e.type == "tool_end" for e in seen):
                break
    return seen, errors


def spoken(session: RealtimeSession) -> list[str]:
    """The transcripts of what the assistant said, from the session's history."""
    return [
        part.transcript
        for item in session._history
        if getattr(item, "role", None) == "assistant"
        for part in item.content
        if getattr(part, "transcript", None)
    ]
