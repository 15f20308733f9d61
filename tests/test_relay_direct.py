"""Direct mode: a model routed to an upstream with ``direct = true`` has its WebRTC media go
straight to that upstream (a second voxgate process here, its language model the scripted
one over real HTTP), while voxgate admits the call, books its usage from its own sideband on
the upstream call, hangs it up at the session's duration limit, runs the server tools the
upstream's model calls, and reverts a configuration the browser changes against the policy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI

from _fault_proxy import FaultProxy
from _tool_model import Model
from _tool_service import ToolService
from _upstream import UpstreamVoxgate as Upstream
from _upstream import upstream_voxgate
from conftest import SlowChatServer, free_port, speech_pcm24k, validated
from voxgate.call.webrtc import PeerClosed, WebRTCPeer
from voxgate.control.policy import Policy

DURATION_S = 14
SPOKEN = "one two three four five"
TRANSCRIBED = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}


SECRET = "direct-tool-signing-secret"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def model() -> Iterator[SlowChatServer]:
    server = SlowChatServer(delay_s=0.01)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def plain_model(model: SlowChatServer) -> None:
    """The upstream's model answers briefly unless a test scripts it."""
    model.respond = Model({})


@pytest.fixture(scope="module")
def service() -> Iterator[ToolService]:
    svc = ToolService(SECRET)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, model: SlowChatServer) -> Iterator[Upstream]:
    env = {"VOXGATE_LLM_BASE_URL": model.url, "VOXGATE_LLM_MODEL": "scripted"}
    with upstream_voxgate(tmp_path_factory.mktemp("direct"), env=env) as running:
        yield running


def direct_setting(upstream: Upstream) -> dict[str, Any]:
    return upstream.setting("hosted", models=["gpt-realtime*"], direct=True)


async def _upstream_sessions(upstream: Upstream) -> int:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{upstream.port}/healthz")).json()
    return int(health["sessions"])


async def _upstream_session(upstream: Upstream, user: str) -> dict[str, Any]:
    """The upstream's own record of the end user's session (the upstream keeps a ledger too:
    found there by the safety identifier voxgate passed on)."""
    auth = {"Authorization": f"Bearer {upstream.api_key}"}
    async with httpx.AsyncClient(base_url=upstream.http_url, headers=auth) as http:
        found = await http.get("/admin/sessions", params={"user": user})
    [record] = found.json()["data"]
    return dict(record)


async def _eventually(check: Callable[[], Awaitable[bool]], tries: int = 100) -> None:
    """Until ``check`` holds (state another process changes in its own time: it has no event
    to wait for), checking every 0.1 s, or fail."""
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{check} did not hold within {tries / 10:g} s")


async def _call(http: httpx.AsyncClient, peer: WebRTCPeer, user: str) -> str:
    """Place a direct call through the relaying server; its call id."""
    offered = await http.post(
        "/v1/realtime/calls",
        params={"model": "gpt-realtime"},
        content=(await peer.create_offer()).encode(),
        headers={
            "Content-Type": "application/sdp",
            "Authorization": "Bearer app-key",
            "OpenAI-Safety-Identifier": user,
        },
    )
    assert offered.status_code == 201, offered.text
    location = offered.headers["location"]
    assert location.startswith("/v1/realtime/calls/rtc_")
    await peer.accept_answer(offered.text)
    await peer.events.wait_open()
    return str(location.rpartition("/")[2])


@pytest.mark.slow
async def test_direct_call_media_goes_upstream_usage_is_booked_and_the_limit_hangs_up(
    start_server: Any, database_url: str, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_server(
        database_url=database_url,
        upstreams=[direct_setting(upstream)],
        policy=Policy(max_session_seconds=DURATION_S),
    )
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        call_id = await _call(http, peer, "user-7")
        created = await peer.events.next()
        validated(created.raw)
        # The call lives on the upstream; voxgate holds a session of its own that governs it.
        assert created.type == "session.created"
        assert await _upstream_sessions(upstream) == 1
        assert (await http.get("/healthz")).json()["sessions"] == 1
        # A sideband attached here sees the call's events (through voxgate's own sideband).
        sideband = await websockets.connect(
            f"{server.ws_url}?call_id={call_id}",
            additional_headers={"Authorization": "Bearer app-key"},
        )
        first = json.loads(await sideband.recv())
        assert first["type"] == "session.created"
        assert first["session"]["id"] == created.data["session"]["id"]
        # ... and what it sends goes to the upstream call: the backend turns transcripts on.
        await sideband.send(json.dumps({"type": "session.update", "session": TRANSCRIBED}))
        updated = (await peer.events.until("session.updated"))[-1]
        assert updated.data["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
        # The microphone's speech goes to the upstream: it hears, transcribes and answers.
        await peer.say(speech_pcm24k(SPOKEN))
        heard_events = await peer.events.until("response.done", 40.0)
        [done] = [e for e in heard_events if e.type == "response.done"]
        transcribed = [
            e
            for e in peer.events.received
            if e.type.endswith("input_audio_transcription.completed")
        ] or await peer.events.until("conversation.item.input_audio_transcription.completed")
        validated(done.raw)
        await peer.audio.wait_audible(timeout_s=20.0)
        mirrored = [json.loads(await sideband.recv())]
        while mirrored[-1]["type"] != "response.done":
            mirrored.append(json.loads(await sideband.recv()))
        assert mirrored[-1] == done.data
        metrics = (await http.get("/metrics")).text
        assert 'voxgate_responses_total{status="completed"} 1.0' in metrics
        assert 'voxgate_sessions_by_engine{engine="direct:hosted"} 1.0' in metrics
        # The duration limit: voxgate hangs the upstream call up, and the client's call ends.
        with pytest.raises(PeerClosed):
            await peer.events.until(lambda e: False, timeout_s=DURATION_S + 15)
        await sideband.close()
        [record] = (await http.get("/v1/admin/sessions")).json()["data"]
        detail = (await http.get(f"/v1/admin/sessions/{record['id']}")).json()
    assert record["engine"] == "upstream:hosted" and record["transport"] == "webrtc"
    assert detail["end_reason"] == "expired"
    rows = {row["kind"]: row for row in detail["usage"]}
    assert rows["response"]["response_id"] == done.data["response"]["id"]
    usage = done.data["response"]["usage"]
    assert rows["response"]["output_audio_tokens"] == usage["output_token_details"]["audio_tokens"]
    assert rows["response"]["output_audio_tokens"] > 0
    assert rows["response"]["input_audio_tokens"] == usage["input_token_details"]["audio_tokens"]
    seconds = transcribed[-1].data["usage"]["seconds"]
    assert rows["transcription"]["model"] == "whisper-1"
    assert rows["transcription"]["audio_seconds_in"] == pytest.approx(seconds) and seconds > 1
    await _eventually(lambda: _no_upstream_sessions(upstream))
    # Upstream, the session was the end user's (the safety identifier went along), and it
    # ended because voxgate hung it up.
    assert (await _upstream_session(upstream, "user-7"))["end_reason"] == "hangup"
    # The server's key went only upstream: not in the relaying server's log, at any level.
    assert upstream.api_key not in caplog.text


async def _no_upstream_sessions(upstream: Upstream) -> bool:
    return await _upstream_sessions(upstream) == 0


async def test_a_spent_budget_hangs_the_direct_call_up(
    start_server: Any, database_url: str, upstream: Upstream
) -> None:
    server = start_server(
        database_url=database_url,
        upstreams=[direct_setting(upstream)],
        policy=Policy(budget_tokens_per_session=5),
    )
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        await _call(http, peer, "user-budget")
        content = [{"type": "input_text", "text": "Tell me something long"}]
        peer.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": content},
            }
        )
        peer.send({"type": "response.create"})
        done = (await peer.events.until("response.done", 30.0))[-1]
        assert done.data["response"]["usage"]["total_tokens"] > 5
        # Booked, over the budget: voxgate hangs the call up.
        with pytest.raises(PeerClosed):
            await peer.events.until(lambda e: False, timeout_s=15)
        [record] = (await http.get("/v1/admin/sessions")).json()["data"]
        detail = (await http.get(f"/v1/admin/sessions/{record['id']}")).json()
    assert detail["end_reason"] == "budget_exceeded"
    assert [row["response_id"] for row in detail["usage"]] == [done.data["response"]["id"]]
    await _eventually(lambda: _no_upstream_sessions(upstream))
    assert (await _upstream_session(upstream, "user-budget"))["end_reason"] == "hangup"


async def test_direct_client_secret_is_minted_upstream_with_the_binding(
    start_server: Any, upstream: Upstream
) -> None:
    server = start_server(upstreams=[direct_setting(upstream)])
    client = AsyncOpenAI(base_url=server.base_url, api_key="app-key")
    raw = await client.realtime.client_secrets.with_raw_response.create(
        session={
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Answer in French.",
        },
        extra_headers={"OpenAI-Safety-Identifier": "user-42"},
    )
    minted = raw.parse()
    await client.close()
    assert minted.value.startswith("ek_")
    assert minted.session is not None and minted.session.instructions == "Answer in French."
    # The secret is the upstream's: a session opened there with it is bound as minted.
    upstream_client = AsyncOpenAI(base_url=upstream.http_url, api_key=minted.value)
    async with upstream_client.realtime.connect(model="gpt-realtime") as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        assert first.session.instructions == "Answer in French."  # type: ignore[union-attr]
    await upstream_client.close()
    # voxgate recorded it (audited, with the upstream that minted it) ...
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        audit = await http.get("/v1/admin/audit", params={"action": "client_secret_mint"})
        [entry] = audit.json()["data"]
        assert entry["detail"]["client_secret_id"] == raw.headers["x-voxgate-client-secret-id"]
        assert entry["detail"]["upstream"] == "hosted", entry
        # ... so a browser holding it may place its call through voxgate too, and be governed:
        # the call is admitted with the secret's binding, which reaches the upstream.
        offered = await http.post(
            "/v1/realtime/calls",
            content=(await peer.create_offer()).encode(),
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {minted.value}",
            },
        )
        assert offered.status_code == 201, offered.text
        await peer.accept_answer(offered.text)
        await peer.events.wait_open()
        created = await peer.events.next()
        assert created.data["session"]["instructions"] == "Answer in French."


async def test_direct_call_refused_by_policy_never_reaches_the_upstream(
    start_server: Any, upstream: Upstream
) -> None:
    server = start_server(
        upstreams=[direct_setting(upstream)], policy=Policy(allowed_models=["gpt-4o-*"])
    )
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        response = await http.post(
            f"{server.base_url}/realtime/calls",
            params={"model": "gpt-realtime"},
            content=(await peer.create_offer()).encode(),
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer k"},
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "model_not_allowed"
    assert await _upstream_sessions(upstream) == 0


async def test_upstream_that_refuses_the_key_is_reported_without_the_key(
    start_server: Any, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = {**direct_setting(upstream), "api_key": "sk-wrong-server-key-123456"}
    server = start_server(upstreams=[wrong])
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        response = await http.post(
            f"{server.base_url}/realtime/calls",
            content=(await peer.create_offer()).encode(),
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer k"},
        )
        minted = await http.post(
            f"{server.base_url}/realtime/client_secrets",
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            headers={"Authorization": "Bearer k"},
        )
    for refused in (response, minted):
        assert refused.status_code == 502
        assert refused.json()["error"]["code"] == "upstream_auth_failed"
        assert "sk-wrong" not in refused.text and "123456" not in refused.text
    assert "sk-wrong-server-key" not in caplog.text  # nor in the server's log, at any level


async def test_an_unreachable_direct_upstream_refuses_the_call_and_frees_its_slot(
    start_server: Any,
) -> None:
    nowhere = {
        "name": "hosted",
        "url": f"ws://127.0.0.1:{free_port()}/v1/realtime",  # nothing listens there
        "models": ["gpt-realtime*"],
        "direct": True,
    }
    server = start_server(upstreams=[nowhere], policy=Policy(max_concurrent_sessions=1))
    async with httpx.AsyncClient(base_url=server.base_url) as http, WebRTCPeer() as peer:
        offer = (await peer.create_offer()).encode()
        for _ in range(2):  # the second is not refused for the first one's slot
            response = await http.post(
                "/realtime/calls",
                content=offer,
                headers={"Content-Type": "application/sdp", "Authorization": "Bearer k"},
            )
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["code"] == "upstream_unreachable" and "'hosted'" in error["message"]
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{server.settings.port}/healthz")
    assert health.json()["sessions"] == 0


async def test_a_cut_sideband_ends_the_call_rather_than_leave_it_unwatched(
    start_server: Any, database_url: str, upstream: Upstream
) -> None:
    with FaultProxy("127.0.0.1", upstream.port) as proxy:
        # The call's set-up passes; voxgate's sideband is cut after its first event.
        proxy.drop_after("session.created")
        behind = {**direct_setting(upstream), "url": proxy.ws_url}
        server = start_server(database_url=database_url, upstreams=[behind])
        base = f"http://127.0.0.1:{server.settings.port}"
        async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
            await _call(http, peer, "user-cut")
            assert (await asyncio.to_thread(proxy.wait_fault)).kind == "drop"
            # voxgate cannot watch the call any more: it hangs it up, and the call ends.
            with pytest.raises(PeerClosed):
                await peer.events.until(lambda e: False, timeout_s=15)
            [record] = (await http.get("/v1/admin/sessions")).json()["data"]
        assert record["end_reason"] == "upstream_unwatched"
        await _eventually(lambda: _no_upstream_sessions(upstream))
        assert (await _upstream_session(upstream, "user-cut"))["end_reason"] == "hangup"


def _said(done: Any) -> str:
    """What a response.done's assistant message said (its transcript or text)."""
    [message] = [o for o in done.data["response"]["output"] if o["type"] == "message"]
    return " ".join(p.get("transcript") or p.get("text") or "" for p in message["content"])


async def test_a_server_tool_runs_from_voxgates_sideband_and_its_result_is_spoken(
    start_server: Any, upstream: Upstream, model: SlowChatServer, service: ToolService
) -> None:
    model.respond = Model({"weather": ("get_weather", {"city": "Paris"})})
    weather = {"name": "get_weather", "kind": "http", "url": service.url("/weather")}
    server = start_server(
        upstreams=[direct_setting(upstream)],
        tools=[{**weather, "parameters": CITY}],
        tools_signing_secret=SECRET,
    )
    before = len(service.calls_to("/weather"))
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        call_id = await _call(http, peer, "user-tools")
        created = await peer.events.next()
        # Offered in the configuration voxgate gave the upstream call.
        assert "get_weather" in [t["name"] for t in created.data["session"]["tools"]]
        text = [{"type": "input_text", "text": "What is the weather in Paris?"}]
        peer.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": text},
            }
        )
        peer.send({"type": "response.create"})
        called = (await peer.events.until("response.done", 30.0))[-1]
        # The browser sees the upstream's events, the call among them; voxgate runs it ...
        [call] = [o for o in called.data["response"]["output"] if o["type"] == "function_call"]
        assert call["name"] == "get_weather"
        # ... and gives the upstream its output and a response.create on its sideband.
        seen = await peer.events.until("response.done", 30.0)
        outputs = [
            e.data["item"]
            for e in seen
            if e.type == "conversation.item.added"
            and e.data["item"]["type"] == "function_call_output"
        ]
        assert [o["call_id"] for o in outputs] == [call["call_id"]]
        for event in seen:
            validated(event.raw)
        assert "sunny and 21 degrees in Paris" in _said(seen[-1])
        audit = await _tool_audit(http, call_id)
    calls = service.calls_to("/weather")[before:]
    assert len(calls) == 1 and calls[0].signature_ok
    assert calls[0].body["arguments"] == {"city": "Paris"}
    assert "sunny" in model.requests[-1]["messages"][-1]["content"]
    [ran] = [e for e in audit if e["detail"].get("tool") == "get_weather"]
    assert ran["code"] == "ran" and ran["detail"]["status"] == "ok", ran


async def _tool_audit(http: httpx.AsyncClient, call_id: str) -> list[dict[str, Any]]:
    """The tool decisions of the session that governs the call."""
    calls = (await http.get("/v1/admin/audit", params={"action": "direct_call"})).json()["data"]
    [session_id] = [e["session_id"] for e in calls if e["detail"].get("call_id") == call_id]
    params = {"kind": "tool", "session_id": session_id}
    return list((await http.get("/v1/admin/audit", params=params)).json()["data"])


def _voice(event: Any) -> str:
    return str(event.data["session"]["audio"]["output"]["voice"])


async def test_a_session_update_the_policy_forbids_is_reverted_upstream(
    start_server: Any, upstream: Upstream
) -> None:
    policy = Policy(allowed_voices=["alloy", "ash"], allowed_tools=["lookup"])
    server = start_server(upstreams=[direct_setting(upstream)], policy=policy)
    base = f"http://127.0.0.1:{server.settings.port}"
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    shell = {"type": "function", "name": "run_shell", "parameters": {"type": "object"}}
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        call_id = await _call(http, peer, "user-update")
        created = await peer.events.next()
        assert _voice(created) == "alloy"
        # Within the policy: kept.
        allowed = {"type": "realtime", "audio": {"output": {"voice": "ash"}}, "tools": [lookup]}
        peer.send({"type": "session.update", "session": allowed})
        assert _voice((await peer.events.until("session.updated"))[-1]) == "ash"
        # Straight to the upstream, which takes it; voxgate's sideband sees it and puts back
        # the last allowed configuration.
        forbidden = {"type": "realtime", "audio": {"output": {"voice": "verse"}}, "tools": [shell]}
        peer.send({"type": "session.update", "session": forbidden})
        taken = (await peer.events.until("session.updated"))[-1]
        assert _voice(taken) == "verse"
        reverted = (await peer.events.until("session.updated"))[-1]
        assert _voice(reverted) == "ash"
        assert [t["name"] for t in reverted.data["session"]["tools"]] == ["lookup"]
        # The call goes on, and the revert is in the audit log.
        peer.send({"type": "response.create"})
        done = (await peer.events.until("response.done", 30.0))[-1]
        assert done.data["response"]["status"] == "completed"
        assert (await http.get("/healthz")).json()["sessions"] == 1
        audit = await http.get("/v1/admin/audit", params={"action": "direct_session_update"})
    [entry] = [e for e in audit.json()["data"] if e["detail"]["call_id"] == call_id]
    assert entry["code"] == "voice_not_allowed"
    assert entry["detail"]["outcome"] == "reverted" and entry["detail"]["call_id"] == call_id


ACCOUNT = {"type": "object", "properties": {"account_id": {"type": "string"}}}


def _tell(peer: WebRTCPeer, text: str) -> None:
    content = [{"type": "input_text", "text": text}]
    peer.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": content},
        }
    )
    peer.send({"type": "response.create"})


def _spoke(event: Any) -> bool:
    """A response.done whose output holds an assistant message."""
    output = event.data["response"]["output"] if event.type == "response.done" else []
    return any(o["type"] == "message" for o in output)


async def _sideband_until(sideband: Any, match: Callable[[dict[str, Any]], bool]) -> Any:
    while not match(event := json.loads(await sideband.recv())):
        pass
    return event


@pytest.mark.parametrize("channel", ["sideband", "typed"])
async def test_a_destructive_tool_in_a_direct_call_runs_once_on_approval(
    start_server: Any,
    upstream: Upstream,
    model: SlowChatServer,
    service: ToolService,
    channel: str,
) -> None:
    model.respond = Model({"delete": ("delete_account", {"account_id": "42"})})
    delete = {"name": "delete_account", "kind": "http", "url": service.url("/delete")}
    server = start_server(
        upstreams=[direct_setting(upstream)],
        tools=[{**delete, "parameters": ACCOUNT, "effect": "destructive"}],
        tools_signing_secret=SECRET,
    )
    before = len(service.calls_to("/delete"))
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        call_id = await _call(http, peer, f"user-approve-{channel}")
        await peer.events.next()
        # The app's backend watches the call on a sideband attached to voxgate.
        sideband = await websockets.connect(
            f"{server.ws_url}?call_id={call_id}",
            additional_headers={"Authorization": "Bearer app-key"},
        )
        await _sideband_until(sideband, lambda e: e["type"] == "session.created")
        _tell(peer, "Please delete account 42.")
        readback = (await peer.events.until(_spoke, 30.0))[-1]
        assert "Shall I go ahead" in _said(readback)
        assert len(service.calls_to("/delete")) == before  # nothing runs before approval
        request = await _sideband_until(
            sideband,
            lambda e: (
                e["type"] == "conversation.item.added"
                and e["item"]["type"] == "mcp_approval_request"
            ),
        )
        assert json.loads(request["item"]["arguments"]) == {"account_id": "42"}
        if channel == "sideband":
            approval = {
                "type": "mcp_approval_response",
                "approval_request_id": request["item"]["id"],
                "approve": True,
            }
            await sideband.send(json.dumps({"type": "conversation.item.create", "item": approval}))
        else:  # the user's next turn (typed here; spoken with input transcription on)
            _tell(peer, "Yes please.")
        said = ""
        while "deleted" not in said:  # after a yes, the upstream's own reply is cancelled
            said = _said((await peer.events.until(_spoke, 30.0))[-1])
        assert "account 42 is deleted" in said
        answered = await _sideband_until(
            sideband,
            lambda e: (
                e["type"] == "conversation.item.added"
                and e["item"]["type"] == "mcp_approval_response"
            ),
        )
        assert answered["item"]["approve"] is True
        await sideband.close()
        audit = await _tool_audit(http, call_id)
    assert len(service.calls_to("/delete")) == before + 1
    decisions = [e["code"] for e in audit if e["detail"].get("tool") == "delete_account"]
    assert decisions.count("awaiting_confirmation") == 1 and decisions.count("ran") == 1, decisions
