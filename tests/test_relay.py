"""Sessions relayed to an upstream Realtime service (a second voxgate process), seen by the
official `openai` SDK and the Agents SDK: events pass through unchanged, the controls apply
in the path, usage reaches the relaying server's ledger, and the upstream's key stays there."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents.realtime import RealtimeRunner

from _agents import ask_the_weather_in_paris, calls, spoken, weather_agent
from _relay import (
    ADMIN_KEY,
    MODEL,
    Seen,
    client,
    events_until,
    module_upstream,
    next_event,
    relay_server,
    rest_get,
    say,
)
from _upstream import UpstreamVoxgate
from conftest import speech_pcm24k


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    yield from module_upstream(tmp_path_factory)


async def test_the_sdk_talks_to_the_upstream_through_the_relay(
    start_server: Any,
    upstream: UpstreamVoxgate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = relay_server(start_server, upstream, tmp_path)
    seen = Seen()
    async with client(server) as c, c.realtime.connect(model=MODEL) as conn:
        created = await next_event(conn, seen)
        assert created.type == "session.created"
        await say(conn, "Tell me about the sea.")
        events = await events_until(conn, seen, "response.done")
    done = events[-1]
    assert done.response.status == "completed"
    assert any(e.type == "response.output_audio.delta" for e in events)
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert "the sea" in transcript.lower()

    # The session, its responses and items are the upstream's: the upstream's own books
    # hold the session the client saw and the response it was told about.
    upstream_session = await rest_get(
        upstream.http_url, f"/admin/sessions/{created.session.id}", upstream.api_key
    )
    assert [u["response_id"] for u in upstream_session["usage"]] == [done.response.id]
    said = {t["item_id"] for t in upstream_session["transcript"] if t["role"] == "assistant"}
    assert {item.id for item in done.response.output} <= said

    # The relaying server's own books: a session of its own (another id) on the upstream
    # engine, whose usage row is the upstream response, priced at the model's list price.
    listed = await rest_get(server.base_url, "/admin/sessions")
    (mine,) = listed["data"]
    assert mine["id"] != created.session.id
    assert mine["engine"] == "upstream:default"
    # The usage row is durable before the client is shown response.done.
    record = await rest_get(server.base_url, f"/admin/sessions/{mine['id']}")
    (row,) = record["usage"]
    assert row["response_id"] == done.response.id
    assert row["model"] == MODEL
    assert row["output_audio_tokens"] == done.response.usage.output_token_details.audio_tokens
    assert row["cost_usd"] > 0

    # The upstream's key went upstream only.
    assert all(upstream.api_key not in raw for raw in seen.raw)
    assert upstream.api_key not in caplog.text
    assert caplog.records, "the server's log was captured"


async def test_transcriptions_of_relayed_sessions_reach_the_ledger(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path
) -> None:
    server = relay_server(start_server, upstream, tmp_path)
    seen = Seen()
    speech = base64.b64encode(speech_pcm24k("hello world")).decode("ascii")
    async with client(server) as c, c.realtime.connect(model=MODEL) as conn:
        await next_event(conn, seen)
        transcription = {"model": "whisper-1"}
        audio = {"input": {"transcription": transcription, "turn_detection": None}}
        await conn.session.update(session={"type": "realtime", "audio": audio})  # type: ignore[typeddict-item]
        await events_until(conn, seen, "session.updated")
        await conn.input_audio_buffer.append(audio=speech)
        await conn.input_audio_buffer.commit()
        done = await events_until(
            conn, seen, "conversation.item.input_audio_transcription.completed"
        )
    heard = done[-1]
    (mine,) = (await rest_get(server.base_url, "/admin/sessions"))["data"]
    record = await rest_get(server.base_url, f"/admin/sessions/{mine['id']}")
    (row,) = record["usage"]
    assert (row["kind"], row["model"]) == ("transcription", "whisper-1")
    assert row["audio_seconds_in"] == pytest.approx(heard.usage.seconds)
    assert row["cost_usd"] > 0  # whisper-1's list price per minute
    (entry,) = record["transcript"]
    assert (entry["item_id"], entry["role"], entry["text"]) == (
        heard.item_id,
        "user",
        heard.transcript,
    )


async def test_an_agent_calls_a_tool_through_the_relay(
    start_server: Any, upstream: UpstreamVoxgate, tmp_path: Path
) -> None:
    calls.clear()
    server = relay_server(start_server, upstream, tmp_path)
    session = await RealtimeRunner(weather_agent()).run(
        model_config={"url": server.ws_url + f"?model={MODEL}", "api_key": ADMIN_KEY}
    )
    async with session:
        seen, errors = await ask_the_weather_in_paris(session)
    assert not errors, errors
    assert calls == ["Paris"]
    tool_start = next(e for e in seen if e.type == "tool_start")
    assert any(e.type == "audio" for e in seen[seen.index(tool_start) :])
    said = spoken(session)
    assert any("sunny and 21 degrees in Paris" in text for text in said), said
