"""Prices: hosted list prices for hosted engines, nothing for the embedded pipeline unless the
operator prices it, cached tokens at the cached rate, and ``[prices."MODEL"]`` settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from voxgate.control.usage import (
    DEFAULT_PRICES,
    EMBEDDED_ENGINE,
    Price,
    PriceTable,
    UsageRecord,
)
from voxgate.settings import Settings


def record(model: str = "gpt-realtime", engine: str = "openai", **counts: float) -> UsageRecord:
    base = UsageRecord("sess_1", "resp_1", "response", None, None, None, model, engine, 0.0)
    return replace(base, **counts)  # type: ignore[arg-type]


def test_hosted_realtime_usage_costs_its_list_price() -> None:
    r = record(input_text_tokens=1_000_000, output_audio_tokens=1_000_000)
    assert PriceTable().priced(r).cost_usd == pytest.approx(4.00 + 64.00)


def test_cached_tokens_are_billed_at_the_cached_rate_instead_of_the_full_one() -> None:
    r = record(input_text_tokens=1_000_000, cached_tokens=250_000)
    assert PriceTable().priced(r).cost_usd == pytest.approx(0.75 * 4.00 + 0.25 * 0.40)


def test_a_dated_snapshot_is_priced_like_its_model() -> None:
    r = record("gpt-realtime-2025-08-28", output_text_tokens=1_000_000)
    assert PriceTable().priced(r).cost_usd == pytest.approx(16.00)


def test_transcription_is_priced_per_minute() -> None:
    r = record("gpt-4o-transcribe", audio_seconds_in=90)
    assert PriceTable().priced(r).cost_usd == pytest.approx(0.009)


def test_the_embedded_engine_is_free_unless_priced() -> None:
    r = record(engine=EMBEDDED_ENGINE, input_text_tokens=1_000_000, characters_spoken=500_000)
    assert PriceTable().priced(r).cost_usd == 0
    table = PriceTable({"gpt-realtime": Price(per_1m_characters=2.0)})
    assert table.priced(r).cost_usd == pytest.approx(1.0)


def test_unknown_models_cost_nothing() -> None:
    assert PriceTable().priced(record("my-model", input_text_tokens=10**6)).cost_usd == 0


def test_prices_come_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "voxgate.toml"
    config.write_text('[prices."local-llama"]\noutput_text_per_1m_tokens = 0.5\n')
    monkeypatch.setenv("VOXGATE_CONFIG", str(config))
    settings = Settings()
    assert settings.prices == {"local-llama": Price(output_text_per_1m_tokens=0.5)}
    assert "gpt-realtime" in DEFAULT_PRICES


def test_a_misspelt_price_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="output_text_per_1m"):
        Settings(prices={"m": {"output_text_per_1m": 1.0}})
