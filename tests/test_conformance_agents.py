"""The OpenAI Agents SDK (`agents.realtime.RealtimeRunner`) runs an agent on voxgate: the
agent calls a function tool, receives its output, and the response continues."""

from __future__ import annotations

from agents.realtime import RealtimeRunner

from _agents import ask_the_weather_in_paris, calls, spoken, weather_agent
from conftest import RunningServer


async def test_agent_calls_a_tool_and_continues(voxgate_server: RunningServer) -> None:
    calls.clear()
    runner = RealtimeRunner(weather_agent())
    session = await runner.run(
        model_config={"url": voxgate_server.ws_url + "?model=gpt-realtime", "api_key": "sk-test"}
    )
    async with session:
        # Two turns: the one that calls the tool, then the one that speaks its result.
        seen, errors = await ask_the_weather_in_paris(session)
    assert not errors, errors
    assert calls == ["Paris"]
    tool_end = next(e for e in seen if e.type == "tool_end")
    assert tool_end.tool.name == "get_weather"
    assert "sunny and 21 degrees in Paris" in tool_end.output
    # After the tool result the model spoke again, and what it said uses the result.
    tool_start = next(e for e in seen if e.type == "tool_start")
    assert any(e.type == "audio" for e in seen[seen.index(tool_start) :])
    said = spoken(session)
    assert any("sunny and 21 degrees in Paris" in text for text in said), said
