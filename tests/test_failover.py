"""Failover of relayed sessions: the upstream (a second voxgate process) behind a
fault-injecting proxy is refused, dropped mid-response or stalled; the client's connection
(the official `openai` SDK, every event validated by its types) goes on with the embedded
pipeline, whose language model is told the conversation so far, and the relaying server's
ledger keeps the upstream's usage up to the failure."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from _failover import (
    LOCAL_ANSWER,
    MODEL,
    audited,
    client,
    cut_mid_reply,
    local_chat,
    metric,
    my_session,
    relay_behind_proxy,
    relay_with_next_upstream,
    rest,
    said_to_model,
    turn,
)
from _fault_proxy import FaultProxy
from _realtime import Events
from _relay import module_upstream
from _upstream import UpstreamVoxgate
from conftest import SlowChatServer, heard, speech_pcm24k
from voxgate.control.policy import Policy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    yield from module_upstream(tmp_path_factory)


@pytest.fixture
def proxy(upstream: UpstreamVoxgate) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream.port) as proxy:
        yield proxy


@pytest.fixture
def chat() -> Iterator[SlowChatServer]:
    server = local_chat()
    yield server
    server.stop()


async def first_turn_upstream(conn: Any, events: Events) -> Any:
    """A turn the upstream answers, before any fault."""
    done = await turn(conn, events, "My name is Ada.")
    assert done.response.status == "completed"
    return done


def assert_earlier_turns_reached(chat: SlowChatServer, upstream_reply: str) -> None:
    said = said_to_model(chat.requests[0])
    assert said[0] == "My name is Ada."
    assert said[1] == upstream_reply  # the upstream's answer, as text
    assert said[2] == "Tell me about the sea."


def reply_text(done: Any) -> str:
    (item,) = done.response.output
    return "".join(p.transcript or p.text or "" for p in item.content)


async def test_dropped_mid_response_goes_on_locally(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path)
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        first = await first_turn_upstream(conn, events)
        proxy.drop_after("response.output_audio.delta", 3)
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tell me about the sea."}],
            }
        )
        await conn.response.create()
        cut = (await events.until("response.done"))[-1]
        assert cut.response.status == "failed"
        assert cut.response.status_details.error.code == "upstream_unavailable"
        updated = await events.expect("session.updated")
        assert updated.session.model == "voxgate-local"
        assert updated.session.id == created.session.id
        # The fallback answers the turn the upstream was cut off in, with audio.
        again = await events.until("response.done")
        assert again[-1].response.status == "completed"
        assert any(e.type == "response.output_audio.delta" for e in again)
        assert_earlier_turns_reached(chat, reply_text(first))
        # And the conversation goes on, on the same connection.
        later = await turn(conn, events, "What is my name?")
        assert later.response.status == "completed"
        assert LOCAL_ANSWER in reply_text(later)
    assert said_to_model(chat.requests[1])[-1] == "What is my name?"
    assert "My name is Ada." in said_to_model(chat.requests[1])
    assert not [e for e in events.all if e.type == "error"]

    # The books: the upstream's response up to the failure, priced as the upstream model.
    record = await my_session(server)
    rows = {u["response_id"]: u for u in record["usage"]}
    assert rows[first.response.id]["model"] == MODEL
    assert rows[first.response.id]["cost_usd"] > 0
    assert rows[later.response.id]["model"] == "voxgate-local"
    (entry,) = await audited(server, "upstream_failover")
    assert entry["code"] == "closed" and entry["detail"]["to"] == "pipeline"
    assert entry["session_id"] == record["id"]
    counted = metric(server, "voxgate_upstream_failovers_total")
    assert counted == {'{reason="closed",to="pipeline",upstream="default"}': 1.0}


async def spoken_turn_upstream(conn: Any, events: Events) -> tuple[str, Any]:
    """A spoken turn, without input transcription, that the upstream answers: the item's id
    and the ``response.done``."""
    created = await events.expect("session.created")
    assert created.session.audio.input.transcription is None  # the client never asked
    # Half a second of silence, the words, then silence enough for the upstream's turn
    # detection to end the turn.
    speech = bytes(24_000) + speech_pcm24k("I would like to order a pizza") + bytes(72_000)
    for start in range(0, len(speech), 9600):  # 200 ms appends, as a client streams
        chunk = speech[start : start + 9600]
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
    committed = (await events.until("input_audio_buffer.committed"))[-1]
    done = (await events.until("response.done"))[-1]
    assert done.response.status == "completed"
    assert not [e for e in events.all if "transcription" in e.type]
    return committed.item_id, done


async def test_spoken_turn_without_transcription_reaches_the_fallback(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path)
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        item_id, spoken = await spoken_turn_upstream(conn, events)
        await cut_mid_reply(conn, events, proxy)
        again = await events.until("response.done")
        assert again[-1].response.status == "completed"
    # The fallback's model was told what the user said, though no transcript ever existed.
    said = said_to_model(chat.requests[0])
    assert heard(said[0], {"order", "pizza"}), said
    assert said[1:3] == [reply_text(spoken), "Tell me about the sea."]
    assert not [e for e in events.all if e.type == "error"]
    # The words are in the relaying server's books too, against the spoken item.
    record = await my_session(server)
    users = {t["item_id"]: t["text"] for t in record["transcript"] if t["role"] == "user"}
    assert users[item_id] == said[0]


async def test_next_upstream_hears_a_spoken_turn_without_transcription(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    server = relay_with_next_upstream(start_server, proxy, upstream, chat, tmp_path)
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        item_id, _ = await spoken_turn_upstream(conn, events)
        updated = await cut_mid_reply(conn, events, proxy)
        again = (await events.until("response.done"))[-1]
        assert again.response.status == "completed"
    # The new upstream session was given the turn as its audio, and heard the words in it.
    record = await rest(
        upstream.http_url, f"/admin/sessions/{updated.session.id}", upstream.api_key
    )
    users = {t["item_id"]: t["text"] for t in record["transcript"] if t["role"] == "user"}
    assert heard(users[item_id], {"order", "pizza"}), users


@pytest.mark.parametrize("status", [401, 403, 429, 503, None])
async def test_refused_or_unreachable_at_connect_goes_on_locally(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
    status: int | None,
) -> None:
    if status is None:
        proxy.unreachable()
    else:
        proxy.refuse(status)
    server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path)
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        assert created.session.model == "voxgate-local"
        await events.expect("session.updated")
        done = await turn(conn, events, "My name is Ada.")
        assert done.response.status == "completed"
        assert reply_text(done) == LOCAL_ANSWER
    assert said_to_model(chat.requests[0]) == ["My name is Ada."]
    (entry,) = await audited(server, "upstream_failover")
    assert entry["detail"]["phase"] == "connect"
    if status is None:
        assert entry["code"] == "unreachable" and entry["detail"]["retryable"] is True
    else:
        assert entry["code"] == "refused"
        assert entry["detail"]["retryable"] is (status in (429, 503))
        assert f"HTTP {status}" in entry["detail"]["message"]
    record = await my_session(server)
    assert {u["model"] for u in record["usage"]} == {"voxgate-local"}


async def test_stalled_upstream_goes_on_locally(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    stalling = {
        **upstream.setting(models=["gpt-realtime*"]),
        "url": proxy.ws_url,
        "stall_timeout_s": 1.0,
    }
    server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path, upstreams=[stalling])
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        first = await first_turn_upstream(conn, events)
        proxy.stall_after("response.created", 2)
        done = await turn(conn, events, "Tell me about the sea.")
        assert done.response.status == "failed"
        updated = await events.expect("session.updated")
        assert updated.session.model == "voxgate-local"
        again = (await events.until("response.done"))[-1]
        assert again.response.status == "completed"
    assert proxy.faults[0].kind == "stall"
    assert_earlier_turns_reached(chat, reply_text(first))
    record = await my_session(server)
    assert first.response.id in {u["response_id"] for u in record["usage"]}
    (entry,) = await audited(server, "upstream_failover")
    assert entry["code"] == "stalled"


async def test_fallback_none_ends_the_session_with_a_clear_error(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    server = relay_behind_proxy(
        start_server, proxy, upstream, chat, tmp_path, policy=Policy(fallback="none")
    )
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        first = await first_turn_upstream(conn, events)
        proxy.drop_after("response.output_audio.delta")
        done = await turn(conn, events, "Tell me about the sea.")
        assert done.response.status == "failed"
        error = await events.expect("error")
        assert error.error.code == "upstream_unavailable"
        assert "no fallback" in error.error.message
        with pytest.raises(ConnectionClosed) as closed:
            await events.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert chat.requests == []  # nothing was served locally
    record = await my_session(server)
    assert [u["response_id"] for u in record["usage"]] == [first.response.id]
    assert record["end_code"] == "upstream_unavailable"
    (entry,) = await audited(server, "upstream_failover")
    assert entry["detail"]["to"] == "none"


async def test_next_upstream_is_given_the_conversation(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    server = relay_with_next_upstream(start_server, proxy, upstream, chat, tmp_path)
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        await first_turn_upstream(conn, events)
        updated = await cut_mid_reply(conn, events, proxy)
        assert updated.session.model == MODEL
        assert updated.session.id != created.session.id  # a new upstream session
        again = (await events.until("response.done"))[-1]
        assert again.response.status == "completed"
    assert chat.requests == []  # the next upstream answered, not the embedded pipeline
    # The new upstream session was given the conversation before it answered.
    record = await rest(
        upstream.http_url, f"/admin/sessions/{updated.session.id}", upstream.api_key
    )
    users = [t["text"] for t in record["transcript"] if t["role"] == "user"]
    assert users[:2] == ["My name is Ada.", "Tell me about the sea."]
    assert [u["response_id"] for u in record["usage"]] == [again.response.id]
    (entry,) = await audited(server, "upstream_failover")
    assert entry["detail"]["upstream"] == "primary" and entry["detail"]["to"] == "relay:secondary"


async def test_stall_before_the_response_started_is_answered_locally(
    start_server: Any,
    upstream: UpstreamVoxgate,
    proxy: FaultProxy,
    chat: SlowChatServer,
    tmp_path: Path,
) -> None:
    stalling = {
        **upstream.setting(models=["gpt-realtime*"]),
        "url": proxy.ws_url,
        "stall_timeout_s": 1.0,
    }
    server = relay_behind_proxy(start_server, proxy, upstream, chat, tmp_path, upstreams=[stalling])
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        first = await first_turn_upstream(conn, events)
        # The upstream takes the next user item, then falls silent: the response the client
        # asked for never starts there.
        proxy.stall_after("conversation.item.done", 3)
        done = await turn(conn, events, "Tell me about the sea.")
        assert done.response.status == "completed"
        assert reply_text(done) == LOCAL_ANSWER
    kinds = [e.type for e in events.all]
    updated = kinds.index("session.updated")
    created = [i for i, kind in enumerate(kinds) if kind == "response.created"]
    assert len(created) == 2  # the upstream's first turn, then the fallback's answer
    assert created[0] < updated < created[1]
    assert_earlier_turns_reached(chat, reply_text(first))
    (entry,) = await audited(server, "upstream_failover")
    assert entry["code"] == "stalled"
