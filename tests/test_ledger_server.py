"""The ledger and budgets through a live server, driven by the official `openai` SDK: budgets
cut a session off mid-conversation with the usage up to the cut in the ledger, a spent daily
budget refuses the next session, and the admin API reports usage, sessions and deletions."""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any

import httpx
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from _realtime import Events
from conftest import RunningServer
from voxgate.control.identity import hash_user
from voxgate.control.policy import Policy
from voxgate.control.usage import Price
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.engines import EngineSet

MODEL = "gpt-realtime"
# One token costs a cent on the embedded engine here, so dollar budgets are reached quickly.
CENT_PER_TOKEN = {MODEL: Price(input_text_per_1m_tokens=10_000, output_text_per_1m_tokens=10_000)}


def engines() -> EngineSet:
    return EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS())


def client(server: RunningServer, user: str | None = None) -> AsyncOpenAI:
    headers = {"OpenAI-Safety-Identifier": user} if user else None
    return AsyncOpenAI(base_url=server.base_url, api_key="sk-test", default_headers=headers)


def admin(server: RunningServer, method: str, path: str, **params: Any) -> httpx.Response:
    url = f"http://127.0.0.1:{server.settings.port}{path}"
    return httpx.request(method, url, params=params, headers={"Authorization": "Bearer x"})


async def talk_until_cut(conn: Any, events: Events, turns: int = 30) -> tuple[list[str], Any]:
    """Text turns until the server cuts the session off; the ids of every response.done seen,
    and the final error."""
    done: list[str] = []
    for n in range(turns):
        text = f"Turn number {n} please"
        # The server may have closed after the last response.done: what it sent before
        # closing is still read below.
        with contextlib.suppress(ConnectionClosed):
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                }
            )
            await conn.response.create(response={"output_modalities": ["text"]})
        for event in await events.until(
            lambda e: (
                e.type == "response.done"
                or (e.type == "error" and e.error.code == "budget_exceeded")
            )
        ):
            if event.type == "response.done":
                done.append(event.response.id)
        if events.all[-1].type == "error":
            return done, events.all[-1]
    raise AssertionError(f"no cut-off after {turns} turns")


async def test_session_budget_cuts_off_mid_session_with_the_usage_in_the_ledger(
    start_server: Any, database_url: str
) -> None:
    policy = Policy(budget_tokens_per_session=360, transcript_retention_days=30)
    server = start_server(engines(), policy=policy, database_url=database_url)
    async with client(server, "user-1").realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        done, error = await talk_until_cut(conn, events)
    assert error.error.code == "budget_exceeded"
    assert "budget_tokens_per_session" in error.error.message
    assert len(done) >= 2  # cut off mid-session, not at the start
    kinds = [e.type for e in events.all]
    assert "rate_limits.updated" in kinds
    limits = [e for e in events.all if e.type == "rate_limits.updated"]
    assert limits[0].rate_limits[0].name == "tokens" and limits[0].rate_limits[0].limit == 360
    # A warning came exactly when a response ended between 80 % and 100 % of the budget.
    totals = [e.response.usage.total_tokens for e in events.all if e.type == "response.done"]
    crossed = [sum(totals[: i + 1]) for i in range(len(totals))]
    warned = any(0.8 * 360 <= spent < 360 for spent in crossed)
    codes = [e.error.code for e in events.all if e.type == "error"]
    assert codes == (["budget_warning"] if warned else []) + ["budget_exceeded"]

    session_id = created.session.id
    record = admin(server, "GET", f"/v1/admin/sessions/{session_id}").json()
    assert record["end_reason"] == "budget_exceeded" and record["end_code"] == "budget_exceeded"
    assert [u["response_id"] for u in record["usage"]] == done
    total = sum(
        u["input_text_tokens"] + u["output_text_tokens"] + u["input_audio_tokens"]
        for u in record["usage"]
    )
    assert total >= 360 and record["input_tokens"] + record["output_tokens"] == total
    roles = [t["role"] for t in record["transcript"]]
    assert roles[:2] == ["user", "assistant"]
    assert record["transcript"][0]["text"] == "Turn number 0 please"
    assert record["user_hash"] and record["user_hash"] != "user-1"
    audit = admin(server, "GET", "/v1/admin/audit", session_id=session_id).json()["data"]
    actions = {(r["action"], r["code"]) for r in audit}
    assert ("budget_exceeded", "budget_exceeded") in actions
    assert ("session_end", "budget_exceeded") in actions
    assert (("budget_warning", "budget_warning") in actions) == warned


async def test_daily_budget_cuts_off_then_refuses_the_next_session(
    start_server: Any, database_url: str
) -> None:
    server = start_server(
        engines(),
        policy=Policy(budget_usd_per_day=3),
        prices=CENT_PER_TOKEN,
        database_url=database_url,
    )
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        done, error = await talk_until_cut(conn, events)
    assert "budget_usd_per_day" in error.error.message
    report = admin(server, "GET", "/v1/admin/usage", group_by="day").json()
    [today] = report["data"]
    assert today["responses"] == len(done) and today["cost_usd"] >= 3
    # The next session is refused at admission, with the code and the budget named.
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        refused = await events.expect("error")
    assert refused.error.code == "budget_exceeded"
    assert "budget_usd_per_day" in refused.error.message


async def test_usage_report_as_csv_and_deletions(start_server: Any, database_url: str) -> None:
    server = start_server(engines(), prices=CENT_PER_TOKEN, database_url=database_url)
    ids = []
    for user in ("alice", "bob"):
        async with client(server, user).realtime.connect(model=MODEL) as conn:
            events = Events(conn)
            ids.append((await events.expect("session.created")).session.id)
            await conn.response.create(response={"output_modalities": ["text"]})
            await events.until("response.done")
    # A session's row exists from its first usage row on.
    sessions = admin(server, "GET", "/v1/admin/sessions").json()["data"]
    assert {s["id"] for s in sessions} == set(ids)
    [alices] = admin(server, "GET", "/v1/admin/sessions", user="alice").json()["data"]
    assert alices["id"] == ids[0]
    by_user = admin(server, "GET", "/v1/admin/usage", group_by="user", format="csv")
    assert by_user.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(by_user.text)))
    assert len(rows) == 2 and all(float(r["cost_usd"]) > 0 for r in rows)
    bad = admin(server, "GET", "/v1/admin/usage", group_by="week")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    gone = admin(server, "DELETE", "/v1/admin/users/alice").json()
    assert gone["deleted"]["usage"] == 1
    assert admin(server, "GET", f"/v1/admin/sessions/{ids[0]}").status_code == 404
    assert admin(server, "DELETE", f"/v1/admin/sessions/{ids[1]}").json()["deleted"] is True
    assert admin(server, "GET", "/v1/admin/usage", group_by="user").json()["data"] == []
    deletions = [r["action"] for r in admin(server, "GET", "/v1/admin/audit").json()["data"]]
    assert "user_delete" in deletions and "session_delete" in deletions
    # The audit log keeps its records, but none names the deleted user any more.
    hashes = {r["user_hash"] for r in admin(server, "GET", "/v1/admin/audit").json()["data"]}
    assert hash_user("alice") not in hashes and hash_user("bob") in hashes


async def test_per_user_daily_budget_holds_one_user_back_only(
    start_server: Any, database_url: str
) -> None:
    policy = Policy(budget_usd_per_user_per_day=2)
    server = start_server(
        engines(), policy=policy, prices=CENT_PER_TOKEN, database_url=database_url
    )
    async with client(server, "carol").realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        _, error = await talk_until_cut(conn, events)
    assert "budget_usd_per_user_per_day" in error.error.message
    async with client(server, "carol").realtime.connect(model=MODEL) as conn:
        refused = await Events(conn).expect("error")
    assert refused.error.code == "budget_exceeded"
    async with client(server, "dave").realtime.connect(model=MODEL) as conn:
        assert (await Events(conn).expect("session.created")).session.id


async def test_with_the_ledger_off_nothing_is_recorded(
    start_server: Any, database_url: str
) -> None:
    server = start_server(engines(), ledger=False, database_url=database_url)
    async with client(server, "erin").realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.response.create(response={"output_modalities": ["text"]})
        await events.until("response.done")
    assert admin(server, "GET", "/v1/admin/sessions").json()["data"] == []
    assert admin(server, "GET", "/v1/admin/usage").json()["data"] == []
