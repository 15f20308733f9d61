"""Each limit of a policy, enforced with its code: concurrency per key and per user, session
duration, idle timeout, allowed models, voices and tools, and the minting rate. Server,
tenant, key and client-secret policies combine, the strictest value winning."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from _controls import MODEL, Admin, client, keyed_server, next_event, refusal
from voxgate.control.policy import Policy

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture
async def setup(start_server: Any, database_url: str) -> Any:
    server = keyed_server(start_server, database_url)
    admin = Admin(server)
    yield server, admin
    await admin.aclose()


async def key_with(admin: Admin, **policy: Any) -> str:
    made = await admin.create_key(scopes=["realtime", "client_secrets"], policy=policy)
    return str(made["key"])


async def test_concurrent_sessions_per_key(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, max_concurrent_sessions=1)
    async with client(server, key) as c, c.realtime.connect(model=MODEL) as first:
        assert (await next_event(first)).type == "session.created"
        second = await refusal(server, key)
        assert (second.type, second.error.code) == ("error", "concurrent_sessions_exceeded")
        assert "max_concurrent_sessions" in second.error.message
    # The slot comes back when the session ends (the server may take a moment to see the close).
    for _ in range(50):
        if (await refusal(server, key)).type == "session.created":
            break
    else:
        pytest.fail("the slot of a closed session was never given back")


async def test_concurrent_sessions_per_user(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, max_concurrent_sessions_per_user=1)
    async with (
        client(server, key, user="user-1") as c,
        c.realtime.connect(model=MODEL) as first,
    ):
        assert (await next_event(first)).type == "session.created"
        same_user = await refusal(server, key, user="user-1")
        assert (same_user.type, same_user.error.code) == ("error", "concurrent_sessions_exceeded")
        assert (await refusal(server, key, user="user-2")).type == "session.created"
        # A client secret minted for the user counts against the same user.
        async with client(server, key, user="user-1") as minting:
            secret = await minting.realtime.client_secrets.create()
        via_secret = await refusal(server, secret.value)
        assert via_secret.error.code == "concurrent_sessions_exceeded"


async def test_session_duration_from_the_key_policy(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, max_session_seconds=0.5)
    async with client(server, key) as c, c.realtime.connect(model=MODEL) as conn:
        created = await next_event(conn)
        assert created.type == "session.created"
        ended = await next_event(conn, timeout_s=15)
        assert (ended.type, ended.error.code) == ("error", "session_duration_exceeded")
        assert "0.5 seconds" in ended.error.message


async def test_idle_timeout_from_the_tenant_policy(setup: Any) -> None:
    server, admin = setup
    response = await admin.http.put(
        "/admin/tenants/acme", json={"policy": {"idle_timeout_seconds": 0.5}}
    )
    assert response.status_code == 200, response.text
    made = await admin.create_key(tenant="acme")
    async with client(server, made["key"]) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).type == "session.created"
        ended = await next_event(conn, timeout_s=15)
        assert (ended.type, ended.error.code) == ("error", "idle_timeout")


async def test_allowed_models(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, allowed_models=["gpt-realtime-mini*"])
    refused = await refusal(server, key, model=MODEL)
    assert (refused.type, refused.error.code) == ("error", "model_not_allowed")
    assert (await refusal(server, key, model="gpt-realtime-mini")).type == "session.created"


async def test_allowed_voices(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, allowed_voices=["marin", "cedar"])
    async with client(server, key) as c, c.realtime.connect(model=MODEL) as conn:
        # The server's default voice is not allowed: the first allowed one is used.
        created = await next_event(conn)
        assert created.session.audio.output.voice == "marin"
        await conn.session.update(
            session={"type": "realtime", "audio": {"output": {"voice": "ash"}}}
        )
        error = await next_event(conn)
        assert (error.type, error.error.code) == ("error", "voice_not_allowed")
        await conn.session.update(
            session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
        )
        assert (await next_event(conn)).session.audio.output.voice == "cedar"
        # A secret minted without a voice gets an allowed one; one asking for a voice outside
        # the list is refused.
        minted_default = await c.realtime.client_secrets.create()
        assert minted_default.session.audio.output.voice == "marin"  # type: ignore[union-attr]
        with pytest.raises(openai.PermissionDeniedError) as minted:
            await c.realtime.client_secrets.create(
                session={"type": "realtime", "audio": {"output": {"voice": "ash"}}}
            )
        assert minted.value.code == "voice_not_allowed"


async def test_allowed_tools(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, allowed_tools=["get_*"])
    bad = {**TOOL, "name": "delete_account"}
    async with client(server, key) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).type == "session.created"
        await conn.session.update(session={"type": "realtime", "tools": [TOOL, bad]})  # type: ignore[list-item]
        error = await next_event(conn)
        assert (error.error.code, error.error.param) == ("tool_not_allowed", "session.tools[1]")
        # Nothing changed; a tool the policy allows is accepted.
        await conn.session.update(session={"type": "realtime", "tools": [TOOL]})  # type: ignore[list-item]
        updated = await next_event(conn)
        assert [t.name for t in updated.session.tools] == ["get_weather"]
        # …and a response cannot bring a forbidden one in by itself.
        await conn.response.create(response={"tools": [bad]})  # type: ignore[list-item]
        error = await next_event(conn)
        assert (error.error.code, error.error.param) == ("tool_not_allowed", "response.tools[0]")


async def test_minting_rate(setup: Any) -> None:
    server, admin = setup
    key = await key_with(admin, client_secrets_per_minute=2)
    async with client(server, key) as c:
        minting = c.with_options(max_retries=0).realtime.client_secrets
        # The limit counts per clock minute: start again if this run straddles two.
        while True:
            minute = time.time() // 60
            ok = [await minting.create() for _ in range(2)]
            limited: openai.RateLimitError | None = None
            try:
                await minting.create()
            except openai.RateLimitError as exc:
                limited = exc
            if time.time() // 60 == minute:
                break
            await asyncio.sleep(61 - time.time() % 60)
    assert all(s.value.startswith("ek_") for s in ok)
    assert limited is not None, "the third secret within a minute was minted"
    assert limited.code == "rate_limit_exceeded"
    assert "client_secrets_per_minute" in limited.message


async def test_a_key_without_realtime_cannot_open_sessions(setup: Any) -> None:
    server, admin = setup
    made = await admin.create_key(scopes=["client_secrets"])
    refused = await refusal(server, made["key"])
    assert (refused.type, refused.error.code) == ("error", "insufficient_scope")


def test_the_strictest_value_wins() -> None:
    server = Policy(max_session_seconds=600, allowed_voices=["*"], idle_timeout_seconds=60)
    tenant = Policy(max_session_seconds=300, allowed_voices=["alloy", "marin", "ash"])
    key = Policy(max_session_seconds=900, allowed_voices=["marin", "verse"], client_secret_uses=3)
    merged = Policy.strictest(server, tenant, key, None)
    assert merged.max_session_seconds == 300
    assert merged.idle_timeout_seconds == 60
    assert merged.client_secret_uses == 3
    assert merged.allowed_voices == ["marin"]
    assert Policy.strictest(Policy(allowed_models=["gpt-*"]), Policy(allowed_models=["*"])) == (
        Policy(allowed_models=["gpt-*"])
    )
    assert (
        Policy.strictest(
            Policy(transcript_retention_days=None), Policy(transcript_retention_days=7)
        ).transcript_retention_days
        == 7
    )
    assert Policy.strictest().allowed_tools is None
