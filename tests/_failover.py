"""Helpers for the failover and renewal tests: a relaying voxgate whose upstream (a second
voxgate process) sits behind the fault proxy, and whose embedded pipeline speaks with espeak-ng
and asks a scripted OpenAI-compatible chat server (what the fallback's model was told is in
``chat.requests``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from _fault_proxy import FaultProxy
from _realtime import Events
from _upstream import UpstreamVoxgate
from conftest import SlowChatServer
from voxgate.control.policy import Policy

ADMIN_KEY = "sk-failover-admin-key-for-tests"
MODEL = "gpt-realtime"
LOCAL_ANSWER = "Your name is Ada."


def local_chat() -> SlowChatServer:
    """The embedded pipeline's language model: one short answer per request."""
    return SlowChatServer(script=[({"content": LOCAL_ANSWER}, None), ({}, "stop")], delay_s=0.0)


def relay_behind_proxy(
    start_server: Any,
    proxy: FaultProxy,
    up: UpstreamVoxgate,
    chat: SlowChatServer,
    tmp_path: Path,
    *,
    upstreams: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> Any:
    """The server under test: ``gpt-realtime*`` relayed to the upstream through the proxy."""
    proxied = {**up.setting(models=["gpt-realtime*"]), "url": proxy.ws_url}
    return start_server(
        api_keys=[ADMIN_KEY],
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        upstreams=upstreams or [proxied],
        llm_base_url=chat.url,
        llm_model="local-llm",
        tts="espeak",
        stt="pocketsphinx",
        stt_workers=1,
        **settings,
    )


def relay_with_next_upstream(
    start_server: Any, proxy: FaultProxy, up: UpstreamVoxgate, chat: SlowChatServer, tmp_path: Path
) -> Any:
    """The server under test with two upstreams and ``fallback = "next"``: the primary behind
    the proxy (which a test drops), then the same upstream reached directly."""
    primary = {**up.setting("primary", models=["gpt-realtime*"]), "url": proxy.ws_url}
    secondary = up.setting("secondary", models=["gpt-realtime*"])
    return relay_behind_proxy(
        start_server,
        proxy,
        up,
        chat,
        tmp_path,
        upstreams=[primary, secondary],
        policy=Policy(fallback="next"),
    )


def client(server: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=ADMIN_KEY)


async def say(conn: Any, text: str) -> None:
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()


async def turn(conn: Any, events: Events, text: str) -> Any:
    """One text turn; its ``response.done``."""
    await say(conn, text)
    return (await events.until("response.done"))[-1]


async def cut_mid_reply(conn: Any, events: Events, proxy: FaultProxy) -> Any:
    """Ask for a reply and have the proxy drop the upstream after its third audio delta: the
    cut response ends ``failed``; returns the ``session.updated`` that follows (what serves
    the session now)."""
    proxy.drop_after("response.output_audio.delta", 3)
    cut = await turn(conn, events, "Tell me about the sea.")
    assert cut.response.status == "failed"
    return await events.expect("session.updated")


def said_to_model(request: dict[str, Any]) -> list[str]:
    """The words of each message a chat request carried (system prompt left out)."""
    words = []
    for message in request["messages"]:
        if message["role"] == "system":
            continue
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        words.append(content)
    return words


async def rest(base_url: str, path: str, key: str = ADMIN_KEY, **params: Any) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{base_url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 200, response.text
    return response.json()


async def my_session(server: Any) -> dict[str, Any]:
    """The relaying server's record of its one session (usage rows and all)."""
    listed = await rest(server.base_url, "/admin/sessions")
    (mine,) = listed["data"]
    record: dict[str, Any] = await rest(server.base_url, f"/admin/sessions/{mine['id']}")
    return record


async def audited(
    server: Any, action: str, wait_s: float = 10.0, count: int = 1
) -> list[dict[str, Any]]:
    """The audit entries of ``action``, waiting until there are ``count`` (they are written in
    the background)."""
    async with asyncio.timeout(wait_s):
        while True:
            found = await rest(server.base_url, "/admin/audit", action=action)
            if len(found["data"]) >= count:
                return list(found["data"])
            await asyncio.sleep(0.1)


def metric(server: Any, name: str) -> dict[str, float]:
    """A counter's samples from /metrics, by their label text."""
    response = httpx.get(
        f"http://127.0.0.1:{server.settings.port}/metrics",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    text = response.text
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            out[labels] = float(value)
    return out


def proxy_for(up: UpstreamVoxgate) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", up.port) as proxy:
        yield proxy
