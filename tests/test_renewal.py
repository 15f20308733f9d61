"""Renewal of relayed sessions: an upstream (a second voxgate process) that ends its sessions
after 12 s serves a conversation that runs past that; the relaying server opens new upstream
sessions at quiet moments and gives them the conversation, and the client (the official
`openai` SDK, every event validated by its types) never notices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _failover import ADMIN_KEY, MODEL, audited, client, metric, rest, said_to_model, turn
from _realtime import Events
from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import SlowChatServer

pytestmark = pytest.mark.slow
CAP_S = 12.0


@pytest.fixture
def upstream_chat() -> Iterator[SlowChatServer]:
    """The upstream's language model: what each upstream session was told is recorded."""
    server = SlowChatServer(script=[({"content": "Noted."}, None), ({}, "stop")], delay_s=0.0)
    yield server
    server.stop()


@pytest.fixture
def capped_upstream(tmp_path: Path, upstream_chat: SlowChatServer) -> Iterator[UpstreamVoxgate]:
    env = {
        "VOXGATE_MAX_SESSION_MINUTES": str(CAP_S / 60),
        "VOXGATE_LLM_BASE_URL": upstream_chat.url,
        "VOXGATE_LLM_MODEL": "upstream-llm",
    }
    with upstream_voxgate(tmp_path, name="capped", env=env) as up:
        yield up


async def test_conversation_runs_past_the_upstream_cap(
    start_server: Any,
    capped_upstream: UpstreamVoxgate,
    upstream_chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    setting = capped_upstream.setting(models=["gpt-realtime*"], max_session_seconds=CAP_S)
    server = start_server(
        api_keys=[ADMIN_KEY],
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        upstreams=[setting],
        tts="espeak",
    )
    started = time.monotonic()
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        assert (await turn(conn, events, "My name is Ada.")).response.status == "completed"
        await audited(server, "upstream_renewal", wait_s=CAP_S)
        assert (await turn(conn, events, "I live in Paris.")).response.status == "completed"
        await audited(server, "upstream_renewal", wait_s=CAP_S + 5, count=2)
        assert time.monotonic() - started > CAP_S  # past the first upstream session's cap
        last = await turn(conn, events, "What is my name and where do I live?")
        assert last.response.status == "completed"
    kinds = [e.type for e in events.all]
    assert "error" not in kinds
    assert kinds.count("session.created") == 1
    assert "session.updated" not in kinds  # a renewal is silent

    # At least three upstream sessions (a slow machine may renew once more before the end);
    # the one that answered the last turn knew the first two.
    sessions = await rest(capped_upstream.http_url, "/admin/sessions", capped_upstream.api_key)
    assert len(sessions["data"]) >= 3
    told = said_to_model(upstream_chat.requests[-1])
    assert told[:4] == ["My name is Ada.", "Noted.", "I live in Paris.", "Noted."]
    assert told[-1] == "What is my name and where do I live?"
    assert len(upstream_chat.requests) == 3
    renewals = metric(server, "voxgate_upstream_renewals_total")['{upstream="default"}']
    assert renewals == len(sessions["data"]) - 1
    assert not (await rest(server.base_url, "/admin/audit", action="upstream_failover"))["data"]
