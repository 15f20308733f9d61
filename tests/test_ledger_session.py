"""The usage ledger seen from a session: usage rows written before the client sees
``response.done`` (audio never waits), transcripts per retention, budgets reported, warned
about and enforced — on virtual time with an in-memory store."""

from __future__ import annotations

import asyncio

from _helpers_protocol import StallingLLM, eventually, pcm_b64, settle, user_text, validated
from _ledger import MemoryLedgerStore, Owner, session_ledger
from voxgate.control.budgets import Budgets
from voxgate.control.shared import MemorySharedState
from voxgate.engines.testing import ScriptedLLM, ScriptedSTT, ScriptedTTS, text_script
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.engines import EngineSet
from voxgate.session.session import SessionLimits
from voxgate.session.testing import MemoryTransport, running_session

LIMITS = SessionLimits(idle_timeout_s=None)


def ask(transport: MemoryTransport, text: str, *, modalities: tuple[str, ...] = ("text",)) -> None:
    transport.send_event({"type": "conversation.item.create", "item": user_text(text)})
    transport.send_event(
        {"type": "response.create", "response": {"output_modalities": list(modalities)}}
    )


def done_usage_tokens(event: dict[str, object]) -> int:
    usage = event["response"]["usage"]  # type: ignore[index]
    return int(usage["total_tokens"])  # type: ignore[index]


async def test_response_done_waits_for_the_usage_row_but_audio_does_not() -> None:
    store = MemoryLedgerStore()
    store.gate = asyncio.Event()
    conn = RealtimeConnection()
    engines = EngineSet(llm=ScriptedLLM([text_script("Hello there friend.")]), tts=ScriptedTTS())
    async with running_session(engines, connection=conn, limits=LIMITS, validate=validated) as run:
        run.session.observer = session_ledger(conn, store, run.clock)
        ask(run.transport, "Hi", modalities=("audio",))
        await eventually(lambda: store.waiting == 1)
        await settle()
        sent = [validated(t) for t in run.transport.sent]
        kinds = [e["type"] for e in sent]
        assert "response.done" not in kinds
        audio_before = kinds.count("response.output_audio.delta")
        assert audio_before > 0 and "response.output_audio.done" in kinds  # all audio went out
        assert store.usage == []
        store.gate.set()
        events = await run.transport.events_until("response.done")
    done = events[-1]
    [row] = store.usage
    assert row.response_id == done["response"]["id"]
    assert row.kind == "response" and row.session_id == conn.session_id
    assert row.total_tokens == done_usage_tokens(done)
    assert (
        row.output_audio_tokens == done["response"]["usage"]["output_token_details"]["audio_tokens"]
    )
    assert row.audio_seconds_out > 0 and row.characters_spoken == len("Hello there friend.")
    assert row.key_id == "key_1" and row.cost_usd == row.input_text_tokens + row.output_text_tokens
    # Every audio delta had gone out before the row was written.
    assert [e["type"] for e in events].count("response.output_audio.delta") == audio_before


async def test_transcripts_follow_the_retention_policy() -> None:
    for days, expect in ((None, 2), (7, 2), (0, 0)):
        store = MemoryLedgerStore()
        conn = RealtimeConnection()
        engines = EngineSet(llm=ScriptedLLM([text_script("Hi back.")]), tts=ScriptedTTS())
        async with running_session(engines, connection=conn, limits=LIMITS) as run:
            run.session.observer = session_ledger(conn, store, run.clock, retention_days=days)
            ask(run.transport, "Hello you")
            await run.transport.events_until("response.done")
        assert len(store.transcripts) == expect, days
        if expect:
            user, assistant = store.transcripts
            assert (user.role, user.text) == ("user", "Hello you")
            assert (assistant.role, assistant.text) == ("assistant", "Hi back.")
            assert user.expires_at == (None if days is None else user.at + days * 86400)
        assert [e.reason for e in store.ended] == ["test_finished"]


async def test_rate_limits_report_the_remaining_session_tokens() -> None:
    store = MemoryLedgerStore()
    conn = RealtimeConnection()
    engines = EngineSet(llm=ScriptedLLM([text_script("One two three.")]), tts=ScriptedTTS())
    async with running_session(engines, connection=conn, limits=LIMITS, validate=validated) as run:
        run.session.observer = session_ledger(
            conn, store, run.clock, budgets=Budgets(tokens_per_session=10_000)
        )
        ask(run.transport, "Count please")
        events = await run.transport.events_until("response.done")
        after = await run.transport.events_until("rate_limits.updated")
    used = done_usage_tokens(events[-1])
    assert "rate_limits.updated" not in [e["type"] for e in events]
    assert after[-1]["rate_limits"] == [
        {"name": "tokens", "limit": 10_000, "remaining": 10_000 - used, "reset_seconds": None}
    ]


async def test_session_token_budget_warns_then_cuts_off_with_the_usage_recorded() -> None:
    store = MemoryLedgerStore()
    audit: list[tuple[str, str | None, dict[str, object]]] = []
    conn = RealtimeConnection()
    answers = [text_script("word " * 20) for _ in range(5)]
    engines = EngineSet(llm=ScriptedLLM(answers), tts=ScriptedTTS())
    async with running_session(engines, connection=conn, limits=LIMITS, validate=validated) as run:
        ledger = session_ledger(conn, store, run.clock, budgets=Budgets(tokens_per_session=120))
        ledger.audit = lambda *rec: audit.append(rec)
        run.session.observer = ledger
        seen: list[dict[str, object]] = []
        used = []
        for _ in range(2):
            ask(run.transport, "Talk")
            seen += await run.transport.events_until("response.done")
            used.append(done_usage_tokens(seen[-1]))
            seen += await run.transport.events_until("rate_limits.updated")
        # Under 80 % after the first response, over it after the second.
        assert used[0] < 0.8 * 120 <= sum(used) < 120
        ask(run.transport, "Talk")
        seen += await run.transport.events_until(
            lambda e: e["type"] == "error" and e["error"]["code"] == "budget_exceeded"
        )
        ended = await run.ended()
    assert ended.reason == "budget_exceeded"
    errors = [e["error"] for e in seen if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["budget_warning", "budget_exceeded"]
    assert all("budget_tokens_per_session" in e["message"] for e in errors)
    assert sum(r.total_tokens for r in store.usage) >= 120
    dones = [e for e in seen if e["type"] == "response.done"]
    assert len(dones) == 3
    assert [d["response"]["id"] for d in dones] == [r.response_id for r in store.usage]
    assert ("budget_warning", "budget_warning", {"budget": "budget_tokens_per_session"}) in audit
    assert ("budget_exceeded", "budget_exceeded", {"budget": "budget_tokens_per_session"}) in audit
    assert run.transport.close_calls[-1][0] == 1008
    assert store.ended[-1].reason == "budget_exceeded"


async def test_warning_at_80_percent_of_the_usd_budget_is_sent_once() -> None:
    store = MemoryLedgerStore()
    conn = RealtimeConnection()
    engines = EngineSet(llm=ScriptedLLM([text_script("ok")] * 3), tts=ScriptedTTS())
    async with running_session(engines, connection=conn, limits=LIMITS, validate=validated) as run:
        run.session.observer = session_ledger(conn, store, run.clock)
        ask(run.transport, "a b c")
        first = done_usage_tokens((await run.transport.events_until("response.done"))[-1])
        # One token costs one dollar here: a budget the next answers cross 80 % of.
        budget = first / 0.85 + 1
        run.session.observer = session_ledger(
            conn, store, run.clock, budgets=Budgets(usd_per_session=budget)
        )
        ask(run.transport, "a b c")
        warned = await run.transport.events_until("error")
        assert warned[-1]["error"]["type"] == "budget_warning"
        assert warned[-1]["error"]["code"] == "budget_warning"
        assert "budget_usd_per_session" in warned[-1]["error"]["message"]
        ask(run.transport, "x")
        rest = await run.transport.events_until(
            lambda e: e["type"] == "error" and e["error"]["code"] == "budget_exceeded"
        )
    assert [e["error"]["code"] for e in rest if e["type"] == "error"] == ["budget_exceeded"]


async def test_per_day_budget_spent_elsewhere_cancels_the_response_in_progress() -> None:
    shared = MemorySharedState()
    owner = Owner(tenant="acme")
    budgets = Budgets(usd_per_day=1000)
    store = MemoryLedgerStore()
    llm = StallingLLM(first="Let me think", rest=" about it.")
    llm.release.set()
    conn = RealtimeConnection()
    async with running_session(EngineSet(llm=llm, tts=ScriptedTTS()), connection=conn) as run:
        ledger = session_ledger(conn, store, run.clock, budgets=budgets, shared=shared, owner=owner)
        run.session.observer = ledger
        ask(run.transport, "Question one")
        seen = await run.transport.events_until("response.done")
        # Another session of the same tenant spends the rest of the day's budget.
        other = session_ledger(
            RealtimeConnection(),
            MemoryLedgerStore(),
            run.clock,
            budgets=budgets,
            shared=shared,
            owner=owner,
        )
        await other.meter.charge(usd=1000, tokens=1000, now=run.clock.wall())
        llm.release.clear()  # the next answer stalls mid-way: it is in progress when checked
        ask(run.transport, "Question two")
        seen += await run.transport.rest()
        ended = await run.ended()
    assert ended.reason == "budget_exceeded"
    first, second = [e for e in seen if e["type"] == "response.done"]
    assert first["response"]["status"] == "completed"
    assert second["response"]["status"] == "cancelled"
    assert second["response"]["status_details"]["error"]["code"] == "budget_exceeded"
    errors = [e["error"] for e in seen if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["budget_exceeded"]
    assert "budget_usd_per_day" in errors[0]["message"]
    # Both responses' usage is in the ledger, the cancelled one included.
    assert [r.response_id for r in store.usage] == [
        first["response"]["id"],
        second["response"]["id"],
    ]
    assert store.usage[1].output_text_tokens > 0  # what it said before the cut


async def test_a_failing_store_is_retried_and_never_blocks_the_reply() -> None:
    store = MemoryLedgerStore()
    store.failures = 2
    conn = RealtimeConnection()
    engines = EngineSet(llm=ScriptedLLM([text_script("Fine.")]), tts=ScriptedTTS())
    async with running_session(engines, connection=conn, limits=LIMITS) as run:
        run.session.observer = session_ledger(conn, store, run.clock)
        ask(run.transport, "Hi")
        done = (await run.transport.events_until("response.done"))[-1]
    assert [r.response_id for r in store.usage] == [done["response"]["id"]]


async def test_billed_transcription_is_recorded_before_its_event() -> None:
    store = MemoryLedgerStore()
    conn = RealtimeConnection()
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=ScriptedSTT(["lights on"]))
    async with running_session(engines, connection=conn, limits=LIMITS, validate=validated) as run:
        run.session.observer = session_ledger(conn, store, run.clock)
        run.transport.send_event(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": None,
                            "transcription": {"model": "gpt-4o-transcribe"},
                        }
                    },
                },
            }
        )
        run.transport.send_event({"type": "input_audio_buffer.append", "audio": pcm_b64(1500)})
        run.transport.send_event({"type": "input_audio_buffer.commit"})
        await run.transport.events_until("conversation.item.input_audio_transcription.completed")
        # The client has the event: the row was there before it.
        [row] = store.usage
    assert (row.kind, row.model, row.response_id) == ("transcription", "gpt-4o-transcribe", None)
    assert row.audio_seconds_in == 1.5
    [said] = store.transcripts
    assert (said.role, said.text) == ("user", "lights on")
