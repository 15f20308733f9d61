"""Upstream settings and routing: ``[[upstreams]]`` in the config file with ``${ENV}`` keys,
the environment shortcuts for one upstream, first-match model globs; the policy's
``fallback``; the merge of upstream and budget rate limits; usage read from upstream events."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from voxgate.control.policy import Policy
from voxgate.server.routing import route, upstreams
from voxgate.session.rate_limits import RateLimitBook
from voxgate.session.relay_records import response_finished, transcription_done
from voxgate.settings import Settings, load_settings

CONFIG = """
[[upstreams]]
name = "openai"
url = "wss://api.openai.com/v1/realtime"
api_key = "${TEST_UPSTREAM_KEY}"
models = ["gpt-realtime*", "gpt-4o-realtime-preview"]
max_session_seconds = 1800

[[upstreams]]
name = "lab"
url = "ws://10.0.0.5:8000/v1/realtime"
models = ["*-lab"]
headers = { "X-Team" = "${TEST_UPSTREAM_TEAM}" }
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOXGATE_CONFIG", "VOXGATE_UPSTREAMS", "VOXGATE_UPSTREAM_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("VOXGATE_UPSTREAM_API_KEY", raising=False)
    monkeypatch.delenv("VOXGATE_UPSTREAM_MODELS", raising=False)


def test_upstreams_from_the_config_file_route_by_model_glob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-the-environment")
    monkeypatch.setenv("TEST_UPSTREAM_TEAM", "voice")
    config = tmp_path / "voxgate.toml"
    config.write_text(CONFIG)
    settings = load_settings(config)
    openai, lab = upstreams(settings)
    assert openai.api_key == "sk-from-the-environment"
    assert (openai.max_session_seconds, openai.stall_timeout_s, openai.direct) == (1800, 15, False)
    assert dict(lab.headers) == {"X-Team": "voice"}
    assert route(settings, "gpt-realtime") is not None
    assert route(settings, "gpt-realtime-2025-08-28") == openai
    assert route(settings, "gpt-4o-realtime-preview") == openai
    assert route(settings, "qwen-lab") == lab
    assert route(settings, "qwen") is None  # the embedded pipeline
    # Neither the setting nor the engine's view shows the key.
    assert "sk-from" not in repr(settings.upstreams) and "sk-from" not in repr(openai)


def test_an_unset_variable_in_a_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_UPSTREAM_KEY", raising=False)
    monkeypatch.setenv("TEST_UPSTREAM_TEAM", "voice")
    config = tmp_path / "voxgate.toml"
    config.write_text(CONFIG)
    with pytest.raises(ValidationError, match="TEST_UPSTREAM_KEY is not set"):
        load_settings(config)


def test_environment_shortcuts_make_one_upstream_named_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOXGATE_UPSTREAM_URL", "wss://api.openai.com/v1/realtime")
    monkeypatch.setenv("VOXGATE_UPSTREAM_API_KEY", "sk-shortcut")
    monkeypatch.setenv("VOXGATE_UPSTREAM_MODELS", "gpt-realtime*, gpt-4o-*")
    (upstream,) = upstreams(load_settings())
    assert (upstream.name, upstream.api_key) == ("default", "sk-shortcut")
    assert upstream.models == ("gpt-realtime*", "gpt-4o-*")
    monkeypatch.delenv("VOXGATE_UPSTREAM_MODELS")
    (upstream,) = upstreams(load_settings())
    assert upstream.serves("anything")  # no models given: every model goes upstream


def test_upstream_settings_that_cannot_work_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="must start with ws:// or wss://"):
        Settings(upstreams=[{"name": "a", "url": "https://api.openai.com/v1/realtime"}])
    with pytest.raises(ValidationError, match="unique"):
        Settings(upstreams=[{"name": "a", "url": "ws://x/v1"}, {"name": "a", "url": "ws://y/v1"}])
    monkeypatch.setenv("VOXGATE_UPSTREAM_API_KEY", "sk-orphan")
    with pytest.raises(ValidationError, match="VOXGATE_UPSTREAM_URL is not"):
        load_settings()


def test_the_strictest_fallback_wins() -> None:
    assert Policy.strictest(Policy(), Policy()).fallback is None
    local, nxt, none = (Policy(fallback=f) for f in ("local", "next", "none"))  # type: ignore[arg-type]
    assert Policy.strictest(local, nxt).fallback == "next"
    assert Policy.strictest(nxt, None, none, local).fallback == "none"
    with pytest.raises(ValidationError):
        Policy(fallback="elsewhere")  # type: ignore[arg-type]


def test_rate_limits_of_upstream_and_budget_merge_tighter_first() -> None:
    book = RateLimitBook()
    budget = [{"name": "tokens", "limit": 600, "remaining": 100, "reset_seconds": None}]
    assert book.from_budget(budget) == budget  # no upstream: the budget's alone
    upstream = [
        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
        {"name": "tokens", "limit": 50000, "remaining": 40000, "reset_seconds": 60},
    ]
    assert book.from_upstream(upstream) == [upstream[0], budget[0]]
    looser = [{"name": "tokens", "limit": 600, "remaining": 500000, "reset_seconds": None}]
    assert book.from_budget(looser) == upstream


def test_usage_and_words_are_read_from_upstream_events() -> None:
    done = {
        "type": "response.done",
        "response": {
            "id": "resp_1",
            "status": "incomplete",
            "output": [
                {
                    "id": "item_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_audio", "transcript": "Hello there."}],
                },
                {"id": "item_2", "type": "function_call", "name": "f", "arguments": "{}"},
            ],
            "usage": {
                "total_tokens": 90,
                "input_tokens": 40,
                "output_tokens": 50,
                "input_token_details": {"text_tokens": 30, "audio_tokens": 10, "cached_tokens": 8},
                "output_token_details": {"text_tokens": 20, "audio_tokens": 30},
            },
        },
    }
    record = response_finished(done, "gpt-realtime")
    assert record is not None
    assert (record.response_id, record.status, record.model) == (
        "resp_1",
        "incomplete",
        "gpt-realtime",
    )
    usage = record.usage
    assert (usage.input_text_tokens, usage.input_audio_tokens, usage.cached_tokens) == (30, 10, 8)
    assert (usage.output_text_tokens, usage.output_audio_tokens, usage.total_tokens) == (20, 30, 90)
    assert record.messages == (("item_1", "Hello there."),)
    bare = response_finished({"response": {"id": "resp_2", "usage": {"input_tokens": 7}}}, "m")
    assert bare is not None and bare.usage.input_text_tokens == 7
    assert response_finished({"response": None}, "m") is None
    heard = transcription_done(
        {"item_id": "item_3", "transcript": "hi", "usage": {"type": "duration", "seconds": 1.5}},
        "gpt-4o-transcribe",
    )
    assert heard is not None
    assert (heard.text, heard.audio_seconds, heard.transcription_model) == (
        "hi",
        1.5,
        "gpt-4o-transcribe",
    )
