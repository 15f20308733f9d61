"""``GET /metrics``: a real server, a real client turn, the Prometheus text read back."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, free_port, speech_pcm24k
from voxgate.settings import Settings


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(Settings(port=free_port()), None)
    running.start()
    yield running
    running.stop()


def scrape(server: RunningServer, **headers: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.settings.port}/metrics"
    reply = httpx.get(url, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_a_spoken_turn_and_a_mistake_show_in_the_metrics(server: RunningServer) -> None:
    before = scrape(server)
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        audio: dict[str, Any] = {"input": {"transcription": {"model": "whisper-1"}}}
        await conn.session.update(session={"type": "realtime", "audio": audio})
        await conn.send({"type": "no.such.event"})  # type: ignore[arg-type, typeddict-item]
        # Audio time, not wall time, decides turns: the whole utterance can go at once.
        speech = bytes(9600) + speech_pcm24k("What is the weather like in Paris tomorrow?")
        speech += bytes(48000)
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech).decode())
        async for event in conn:
            if event.type == "session.created":
                live = scrape(server)["voxgate_sessions"]
            if event.type == "response.done":
                break
    after = scrape(server)
    assert live == before["voxgate_sessions"] + 1

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew("voxgate_speech_stopped_to_transcript_seconds_count") == 1
    assert grew("voxgate_speech_stopped_to_first_audio_seconds_count") == 1
    assert grew("voxgate_responses_total{status=completed}") == 1
    errors = {k: grew(k) for k in after if k.startswith("voxgate_errors_total{")}
    assert sum(errors.values()) == 1, errors  # the unknown event, counted under its code
    # The turn's audio (about 3 s of speech and silence) and the reply's audio.
    assert 1.5 < grew("voxgate_speech_input_seconds_total") < 6
    assert grew("voxgate_audio_output_seconds_total") > 1
    # The engines behind the reply: one answer from the language model, its pieces spoken.
    assert grew("voxgate_llm_time_to_first_token_seconds_count") == 1
    assert grew("voxgate_tts_time_to_first_audio_seconds_count") >= 1
    made = grew("voxgate_tts_audio_seconds_total")
    assert made == pytest.approx(grew("voxgate_audio_output_seconds_total"), rel=0.1)
    assert 0 < grew("voxgate_tts_compute_seconds_total") < made  # faster than real time
    # Speech to text decoded the turn (at its pause, or at its end), faster than real time.
    decoded = grew("voxgate_stt_audio_seconds_total")
    assert decoded > 1.5 and 0 < grew("voxgate_stt_compute_seconds_total") < decoded


def test_with_api_keys_a_scraper_needs_one(start_server: Any) -> None:
    secured = start_server(api_keys=["scrape-key"])
    url = f"http://127.0.0.1:{secured.settings.port}/metrics"
    assert httpx.get(url).status_code == 401
    ok = httpx.get(url, headers={"Authorization": "Bearer scrape-key"})
    assert ok.status_code == 200 and "voxgate_sessions" in ok.text
