"""``GET /metrics``: what the server does, in the Prometheus text format.

Each session's client transport is wrapped in a ``MeteredTransport`` that watches the server
events going out (one cheap look at the event type; JSON is parsed only for the few events
measured, never for audio deltas). From them:

- ``voxgate_speech_stopped_to_transcript_seconds``: ``speech_stopped`` → the turn's
  ``…input_audio_transcription.completed`` (sent when the client asked for transcripts);
- ``voxgate_speech_stopped_to_first_audio_seconds``: ``speech_stopped`` → the reply's first
  audio (``response.output_audio.delta``, or ``output_audio_buffer.started`` over WebRTC);
- ``voxgate_responses_total{status}``, ``voxgate_errors_total{code}``;
- ``voxgate_upstream_failovers_total{upstream,reason,to}`` and
  ``voxgate_upstream_renewals_total{upstream}``: relayed sessions' failovers and renewals;
- ``voxgate_speech_input_seconds_total``: audio of the user's detected turns;
  ``voxgate_audio_output_seconds_total``: reply audio (from each response's usage).

The language model and text to speech are wrapped (``metered.py``) for
``voxgate_llm_time_to_first_token_seconds``, ``voxgate_tts_time_to_first_audio_seconds`` and
``voxgate_tts_compute_seconds_total`` / ``voxgate_tts_audio_seconds_total``, and speech to
text for ``voxgate_stt_compute_seconds_total`` / ``voxgate_stt_audio_seconds_total``.

``voxgate_sessions`` is the number of live sessions; ``voxgate_sessions_by_engine{engine}``
splits them by what serves them: ``pipeline`` (the embedded engines), ``relay:<upstream>``,
``direct:<upstream>`` (a call whose media goes to the upstream; voxgate watches it). A
relayed or direct session's events pass through the same ``MeteredTransport`` (for a direct
call, the events voxgate's sideband sees), so the histograms and counters count them too;
events an upstream wrote are read defensively (a field missing is not an error).

Every histogram and counter lives in the server's own registry, so several servers in one
process (tests) do not mix.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..session.engines import EngineSet
from ..session.transport import Transport
from .metered import MeteredLLM, MeteredSTT, MeteredTTS

# Seconds: 25 ms to 10 s, dense where the latency targets are (100–500 ms).
_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5, 10)
# Assistant audio counts 20 usage tokens per second (as the hosted API counts it).
_AUDIO_TOKENS_PER_S = 20
# Event types measured; their "type" appears within the first bytes of the JSON.
_WATCHED = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "conversation.item.input_audio_transcription.completed",
    "output_audio_buffer.started",
    "response.done",
    '"error"',
)
_AUDIO_DELTA = '"response.output_audio.delta"'
_HEAD = 120  # characters of an event that hold its event_id and type
_PENDING = 64  # turns remembered per session while their transcript or stop is awaited


class Metrics:
    """The server's metrics registry and instruments."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        live_sessions: Callable[[], int],
        clock: Callable[[], float],
        engines: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.registry = CollectorRegistry()
        self.clock = clock
        r = self.registry
        Gauge("voxgate_sessions", "Live sessions.", registry=r).set_function(live_sessions)
        r.register(_ByEngine(engines))
        self.to_transcript = Histogram(
            "voxgate_speech_stopped_to_transcript_seconds",
            "From speech_stopped to the turn's input transcript.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.to_audio = Histogram(
            "voxgate_speech_stopped_to_first_audio_seconds",
            "From speech_stopped to the first audio of the reply.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "voxgate_responses", "Responses by final status.", ["status"], registry=r
        )
        self.errors = Counter("voxgate_errors", "Error events by code.", ["code"], registry=r)
        self.speech_in = Counter(
            "voxgate_speech_input_seconds", "Audio of the user's detected turns.", registry=r
        )
        self.audio_out = Counter(
            "voxgate_audio_output_seconds", "Reply audio produced.", registry=r
        )
        self.llm_first_token = Histogram(
            "voxgate_llm_time_to_first_token_seconds",
            "From asking the language model to its first text or tool call.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.tts_first_audio = Histogram(
            "voxgate_tts_time_to_first_audio_seconds",
            "From asking text to speech for a piece to its first audio.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.tts_compute = Counter(
            "voxgate_tts_compute_seconds",
            "Time spent waiting for text to speech (over audio seconds: its real-time factor).",
            registry=r,
        )
        self.stt_compute = Counter(
            "voxgate_stt_compute_seconds",
            "Time spent decoding speech (over audio seconds: its real-time factor).",
            registry=r,
        )
        self.stt_audio = Counter(
            "voxgate_stt_audio_seconds", "Audio decoded by speech to text.", registry=r
        )
        self.tts_audio = Counter(
            "voxgate_tts_audio_seconds", "Audio made by text to speech.", registry=r
        )
        # Relayed sessions (docs/relay.md): upstreams lost and what took over; renewals.
        self.failovers = Counter(
            "voxgate_upstream_failovers",
            "Relayed sessions whose upstream failed, by upstream, failure and what took over.",
            ["upstream", "reason", "to"],
            registry=r,
        )
        self.renewals = Counter(
            "voxgate_upstream_renewals",
            "Upstream sessions renewed before their cap, by upstream.",
            ["upstream"],
            registry=r,
        )
        self.relay_audio_dropped = Counter(
            "voxgate_relay_audio_dropped_seconds",
            "Upstream reply audio not played because the playout held all it may, by upstream.",
            ["upstream"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def meter(self, transport: Transport) -> MeteredTransport:
        return MeteredTransport(transport, self)

    def meter_engines(self, engines: EngineSet) -> EngineSet:
        """The same engines, measured (VAD aside: it runs inline, per 32 ms window)."""
        llm = MeteredLLM(engines.llm, self.llm_first_token, self.clock)
        tts = MeteredTTS(
            engines.tts, self.tts_first_audio, self.tts_compute, self.tts_audio, self.clock
        )
        stt = (
            MeteredSTT(engines.stt, self.stt_compute, self.stt_audio, self.clock)
            if engines.stt is not None
            else None
        )
        return replace(engines, llm=llm, tts=tts, stt=stt)


class _ByEngine(Collector):
    """``voxgate_sessions_by_engine``: live sessions counted by what serves each now."""

    def __init__(self, engines: Callable[[], Iterable[str]]) -> None:
        self._engines = engines

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "voxgate_sessions_by_engine",
            "Live sessions by what serves them (pipeline, relay:<upstream>, direct:<upstream>).",
            labels=["engine"],
        )
        for engine, count in sorted(Tally(self._engines()).items()):
            family.add_metric([engine], count)
        yield family


class MeteredTransport:
    """A ``Transport`` that measures the server events it sends (see the module's note)."""

    def __init__(self, inner: Transport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._started_ms: dict[str, int] = {}  # item → audio_start_ms of its turn
        self._stopped_at: dict[str, float] = {}  # item → when its speech_stopped went out
        self._awaiting_audio: float | None = None  # the last speech_stopped not yet answered

    async def receive(self) -> str | bytes:
        return await self._inner.receive()

    async def send(self, text: str) -> None:
        await self._inner.send(text)
        head = text[:_HEAD]
        if _AUDIO_DELTA in head:
            self._first_audio()
        elif any(kind in head for kind in _WATCHED):
            self._observe(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.close(code, reason)

    def _first_audio(self) -> None:
        if self._awaiting_audio is not None:
            self._metrics.to_audio.observe(self._metrics.clock() - self._awaiting_audio)
            self._awaiting_audio = None

    def _observe(self, event: dict[str, Any]) -> None:
        m, now = self._metrics, self._metrics.clock()
        match event.get("type"):
            case "input_audio_buffer.speech_started":
                self._started_ms[str(event.get("item_id"))] = _ms(event.get("audio_start_ms"))
                self._awaiting_audio = None  # the user spoke again before any reply
            case "input_audio_buffer.speech_stopped":
                item, end_ms = str(event.get("item_id")), _ms(event.get("audio_end_ms"))
                self._stopped_at[item] = self._awaiting_audio = now
                start = self._started_ms.pop(item, end_ms)
                m.speech_in.inc(max(0, end_ms - start) / 1000)
            case "conversation.item.input_audio_transcription.completed":
                stopped = self._stopped_at.pop(str(event.get("item_id")), None)
                if stopped is not None:
                    m.to_transcript.observe(now - stopped)
            case "output_audio_buffer.started":
                self._first_audio()
            case "response.done":
                response = event.get("response") or {}
                m.responses.labels(status=str(response.get("status") or "unknown")).inc()
                usage = response.get("usage") or {}
                tokens = _ms((usage.get("output_token_details") or {}).get("audio_tokens"))
                m.audio_out.inc(max(0, tokens) / _AUDIO_TOKENS_PER_S)
            case "error":
                m.errors.labels(code=(event.get("error") or {}).get("code") or "none").inc()
            case _:
                pass
        # Turns whose transcript never comes (not asked for), or that never stopped, must not
        # pile up: only the latest few are kept.
        for pending in (self._stopped_at, self._started_ms):
            if len(pending) > _PENDING:
                pending.pop(next(iter(pending)))


def _ms(value: Any) -> int:
    """A count from an event (an upstream's may lack it): 0 unless it is a number."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
