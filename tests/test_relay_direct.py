"""Direct mode: a model routed to an upstream with ``direct = true`` has its WebRTC media go
straight to that upstream (a second voxgate process here), while voxgate admits the call,
books its usage from its own sideband on the upstream call, and hangs it up at the session's
duration limit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _direct_upstream import Upstream, upstream_voxgate
from conftest import validated
from voxgate.call.webrtc import PeerClosed, WebRTCPeer
from voxgate.control.policy import Policy
from voxgate.settings import UpstreamSetting

DURATION_S = 8


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with upstream_voxgate(tmp_path_factory.mktemp("upstream")) as running:
        yield running


def direct_setting(upstream: Upstream) -> UpstreamSetting:
    return UpstreamSetting(
        name="hosted",
        url=upstream.ws_url,
        api_key=upstream.api_key,
        models=["gpt-realtime*"],
        direct=True,
    )


async def _upstream_sessions(upstream: Upstream) -> int:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{upstream.root_url}/healthz")).json()
    return int(health["sessions"])


async def _upstream_session(upstream: Upstream, user: str) -> dict[str, Any]:
    """The upstream's own record of the end user's session (the upstream keeps a ledger too:
    found there by the safety identifier voxgate passed on)."""
    auth = {"Authorization": f"Bearer {upstream.api_key}"}
    async with httpx.AsyncClient(base_url=upstream.base_url, headers=auth) as http:
        found = await http.get("/admin/sessions", params={"user": user})
    [record] = found.json()["data"]
    return dict(record)


async def test_direct_call_media_goes_upstream_usage_is_booked_and_the_limit_hangs_up(
    start_server: Any, database_url: str, upstream: Upstream
) -> None:
    server = start_server(
        database_url=database_url,
        upstreams=[direct_setting(upstream)],
        policy=Policy(max_session_seconds=DURATION_S),
    )
    base = f"http://127.0.0.1:{server.settings.port}"
    async with httpx.AsyncClient(base_url=base) as http, WebRTCPeer() as peer:
        offered = await http.post(
            "/v1/realtime/calls",
            params={"model": "gpt-realtime"},
            content=(await peer.create_offer()).encode(),
            headers={
                "Content-Type": "application/sdp",
                "Authorization": "Bearer app-key",
                "OpenAI-Safety-Identifier": "user-7",
            },
        )
        assert offered.status_code == 201, offered.text
        assert offered.headers["location"].startswith("/v1/realtime/calls/rtc_")
        await peer.accept_answer(offered.text)
        await peer.events.wait_open()
        created = await peer.events.next()
        validated(created.raw)
        # The call lives on the upstream: its session, and voxgate's own session apart from it.
        assert created.type == "session.created"
        assert await _upstream_sessions(upstream) == 1
        assert (await http.get("/healthz")).json()["sessions"] == 1
        peer.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Hello over a direct call"}],
                },
            }
        )
        peer.send({"type": "response.create", "response": {"max_output_tokens": 8}})
        done = (await peer.events.until("response.done", 30.0))[-1]
        validated(done.raw)
        # Reply audio came over the media track, from the upstream.
        await peer.audio.wait_audible(timeout_s=20.0)
        # The duration limit: voxgate hangs the upstream call up, and the client's call ends.
        with pytest.raises(PeerClosed):
            await peer.events.until(lambda e: False, timeout_s=DURATION_S + 15)
        sessions = (await http.get("/v1/admin/sessions")).json()["data"]
        [record] = sessions
        detail = (await http.get(f"/v1/admin/sessions/{record['id']}")).json()
    assert record["engine"] == "upstream:hosted" and record["transport"] == "webrtc"
    [row] = detail["usage"]
    assert row["response_id"] == done.data["response"]["id"]
    usage = done.data["response"]["usage"]
    assert row["output_audio_tokens"] == usage["output_token_details"]["audio_tokens"] > 0
    assert row["input_text_tokens"] == usage["input_token_details"]["text_tokens"] > 0
    assert detail["end_reason"] == "expired"
    for _ in range(100):  # the upstream forgets the call once its session has closed
        if await _upstream_sessions(upstream) == 0:
            break
        await asyncio.sleep(0.1)
    assert await _upstream_sessions(upstream) == 0
    # Upstream, the session was the end user's (the safety identifier went along), and it
    # ended because it was hung up.
    assert (await _upstream_session(upstream, "user-7"))["end_reason"] == "hangup"


async def test_direct_client_secret_is_minted_upstream_with_the_binding(
    start_server: Any, upstream: Upstream
) -> None:
    server = start_server(upstreams=[direct_setting(upstream)])
    client = AsyncOpenAI(base_url=server.base_url, api_key="app-key")
    minted = await client.realtime.client_secrets.create(
        session={
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Answer in French.",
        },
        extra_headers={"OpenAI-Safety-Identifier": "user-42"},
    )
    await client.close()
    assert minted.value.startswith("ek_")
    assert minted.session is not None and minted.session.instructions == "Answer in French."
    # The secret is the upstream's: a session opened there with it is bound as minted.
    upstream_client = AsyncOpenAI(base_url=upstream.base_url, api_key=minted.value)
    async with upstream_client.realtime.connect(model="gpt-realtime") as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        assert first.session.instructions == "Answer in French."  # type: ignore[union-attr]
    await upstream_client.close()


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
    start_server: Any, upstream: Upstream
) -> None:
    wrong = UpstreamSetting(
        name="hosted",
        url=upstream.ws_url,
        api_key="sk-wrong-server-key-123456",
        models=["gpt-realtime*"],
        direct=True,
    )
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
