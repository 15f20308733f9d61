"""What a session consumed, and what that cost.

A `UsageRecord` is one row of the ledger: one finished response, or one input transcription.
Its cost comes from a `PriceTable`: the hosted models' list prices by default (source and date
in docs/usage.md), overridden or extended by the operator's ``[prices."MODEL"]`` tables.

The embedded engines cost nothing unless the operator prices them: a session served by the
local pipeline reports whatever model name the client asked for ("gpt-realtime" by default),
and charging the hosted list price for work done on the operator's own CPU would be wrong.
So default prices apply only to usage whose engine is a hosted one (`HOSTED_ENGINES`), or
an upstream Realtime service a session was relayed to (engine ``upstream:<name>``): its usage
is what the upstream reports for its own model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..protocol.commands import Usage

UsageKind = Literal["response", "transcription"]
# The engine label of sessions served by the embedded VAD → STT → LLM → TTS pipeline.
EMBEDDED_ENGINE = "embedded"
# Engines whose usage is billed by a hosted provider at its list prices.
HOSTED_ENGINES = frozenset({"openai"})
UPSTREAM_ENGINE_PREFIX = "upstream:"
_M = 1_000_000


@dataclass(frozen=True, slots=True)
class UsageRecord:
    session_id: str
    response_id: str | None
    kind: UsageKind
    key_id: str | None
    tenant: str | None
    user_hash: str | None
    model: str
    engine: str
    at: float  # seconds since the epoch
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    characters_spoken: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_text_tokens
            + self.input_audio_tokens
            + self.output_text_tokens
            + self.output_audio_tokens
        )

    @classmethod
    def of_response(
        cls, base: UsageRecord, response_id: str, model: str, usage: Usage
    ) -> UsageRecord:
        """``base`` (who and when) with one response's usage."""
        return replace(
            base,
            response_id=response_id,
            kind="response",
            model=model,
            input_text_tokens=usage.input_text_tokens,
            input_audio_tokens=usage.input_audio_tokens,
            cached_tokens=usage.cached_tokens,
            output_text_tokens=usage.output_text_tokens,
            output_audio_tokens=usage.output_audio_tokens,
            audio_seconds_out=usage.audio_seconds_out,
            characters_spoken=usage.characters_spoken,
        )


class Price(BaseModel):
    """US dollars per unit of usage; every field defaults to 0 (free)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_text_per_1m_tokens: float = Field(0.0, ge=0)
    input_audio_per_1m_tokens: float = Field(0.0, ge=0)
    cached_input_per_1m_tokens: float = Field(0.0, ge=0)
    output_text_per_1m_tokens: float = Field(0.0, ge=0)
    output_audio_per_1m_tokens: float = Field(0.0, ge=0)
    # Speech transcribed (input transcription), per minute of audio.
    audio_in_per_minute: float = Field(0.0, ge=0)
    # Speech synthesised by a local engine, per minute of audio and per million characters.
    audio_out_per_minute: float = Field(0.0, ge=0)
    per_1m_characters: float = Field(0.0, ge=0)

    def cost(self, r: UsageRecord) -> float:
        # Cached tokens are part of the input count; they are billed at the cached rate
        # instead of (not on top of) the full one, text first.
        cached_text = min(r.cached_tokens, r.input_text_tokens)
        cached_audio = min(r.cached_tokens - cached_text, r.input_audio_tokens)
        usd = (
            (r.input_text_tokens - cached_text) * self.input_text_per_1m_tokens
            + (r.input_audio_tokens - cached_audio) * self.input_audio_per_1m_tokens
            + (cached_text + cached_audio) * self.cached_input_per_1m_tokens
            + r.output_text_tokens * self.output_text_per_1m_tokens
            + r.output_audio_tokens * self.output_audio_per_1m_tokens
            + r.characters_spoken * self.per_1m_characters
        ) / _M
        usd += r.audio_seconds_in / 60 * self.audio_in_per_minute
        usd += r.audio_seconds_out / 60 * self.audio_out_per_minute
        return round(usd, 9)


def _tokens(
    text_in: float, cached: float, text_out: float, audio_in: float, audio_out: float
) -> Price:
    return Price(
        input_text_per_1m_tokens=text_in,
        cached_input_per_1m_tokens=cached,
        output_text_per_1m_tokens=text_out,
        input_audio_per_1m_tokens=audio_in,
        output_audio_per_1m_tokens=audio_out,
    )


# List prices of the hosted models (USD; source and date: docs/usage.md).
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-realtime": _tokens(4.00, 0.40, 16.00, 32.00, 64.00),
    "gpt-realtime-mini": _tokens(0.60, 0.06, 2.40, 10.00, 20.00),
    "gpt-4o-realtime-preview": _tokens(5.00, 2.50, 20.00, 40.00, 80.00),
    "gpt-4o-mini-realtime-preview": _tokens(0.60, 0.30, 2.40, 10.00, 20.00),
    "gpt-4o-transcribe": Price(audio_in_per_minute=0.006),
    "gpt-4o-mini-transcribe": Price(audio_in_per_minute=0.003),
    "whisper-1": Price(audio_in_per_minute=0.006),
}


class PriceTable:
    """Prices by model name. The operator's prices apply to every engine; the defaults only
    to hosted engines. A dated snapshot name ("gpt-realtime-2025-08-28") is priced like its
    model when it has no price of its own."""

    def __init__(
        self,
        configured: dict[str, Price] | None = None,
        defaults: dict[str, Price] = DEFAULT_PRICES,
    ) -> None:
        self.configured = dict(configured or {})
        self.defaults = defaults

    def price(self, model: str, engine: str) -> Price | None:
        found = _lookup(self.configured, model)
        hosted = engine in HOSTED_ENGINES or engine.startswith(UPSTREAM_ENGINE_PREFIX)
        if found is None and hosted:
            found = _lookup(self.defaults, model)
        return found

    def priced(self, record: UsageRecord) -> UsageRecord:
        """The record with its cost filled in (0 when the model has no price)."""
        price = self.price(record.model, record.engine)
        return replace(record, cost_usd=price.cost(record) if price is not None else 0.0)


def _lookup(table: dict[str, Price], model: str) -> Price | None:
    if model in table:
        return table[model]
    # "gpt-realtime-2025-08-28" → "gpt-realtime": strip a trailing date snapshot.
    parts = model.rsplit("-", 3)
    if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
        return table.get(parts[0])
    return None
