"""Replicas sharing Redis: a sideband attach that reaches a replica other than the one holding
the WebRTC call is relayed to the owner, event for event, both ways, and so is a hang-up;
selection of the shared state from the settings."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from _shared_state import REDIS_URL, own_prefix, redis_state, wait_until
from conftest import RunningServer, free_port
from voxgate.call.webrtc import WebRTCPeer, hang_up, post_offer
from voxgate.control.shared import MemorySharedState
from voxgate.server import replicas
from voxgate.settings import Settings, SettingsError
from voxgate.storage.redis_state import RedisSharedState

KEY = "sk-replicas"


prefix = pytest.fixture(own_prefix)


@pytest.fixture
def pair(start_server: Any, prefix: str) -> tuple[RunningServer, RunningServer]:
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix, "api_keys": [KEY]}
    return start_server(stt_workers=1, **shared), start_server(stt_workers=1, **shared)


def say_text(peer: WebRTCPeer, text: str) -> None:
    content = [{"type": "input_text", "text": text}]
    peer.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": content}})  # noqa: E501
    peer.send({"type": "response.create", "response": {"max_output_tokens": 4}})


async def test_a_sideband_attach_on_another_replica_reaches_the_call(
    pair: tuple[RunningServer, RunningServer], prefix: str
) -> None:
    owner, other = pair
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        answer = await post_offer(http, owner.base_url, await peer.create_offer(), api_key=KEY)
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        client = AsyncOpenAI(base_url=other.base_url, api_key=KEY)
        async with client.realtime.connect(call_id=answer.call_id) as sideband:
            created = await sideband.recv()
            assert created.type == "session.created"
            # Client to owner: the update reaches the call's session on the other replica.
            await sideband.session.update(
                session={"type": "realtime", "instructions": "Be brief."}
            )
            updated = await sideband.recv()
            assert updated.type == "session.updated"
            assert updated.session.instructions == "Be brief."
            on_channel = await peer.events.until("session.updated", 30)
            assert on_channel[-1].data["session"]["instructions"] == "Be brief."
            # Owner to client: the peer's turn is seen through the relay.
            say_text(peer, "Hi.")
            kinds = []
            while (event := await sideband.recv()).type != "response.done":
                kinds.append(event.type)
            assert "response.created" in kinds
        # Leaving the sideband does not end the call.
        say_text(peer, "Again.")
        await peer.events.until("response.done", 30)
        # A hang-up through the other replica reaches the owner, with the owner's answers.
        assert await hang_up(http, other.base_url, answer.call_id, api_key="sk-wrong") == 401
        assert await hang_up(http, other.base_url, answer.call_id, api_key=KEY) == 200
        with pytest.raises(Exception, match="closed"):
            while True:
                await peer.events.next(timeout_s=10)
    # Ended calls leave the directory.
    async with redis_state(prefix) as shared:
        assert await wait_until(lambda: _gone(shared, answer.call_id), 10)


async def _gone(shared: RedisSharedState, call_id: str) -> bool:
    return await shared.call_owner(call_id) is None


async def first_sideband_event(server: RunningServer, call_id: str, key: str = KEY) -> Any:
    """The first event that a sideband attach to `call_id` through `server` receives."""
    client = AsyncOpenAI(base_url=server.base_url, api_key=key)
    async with client.realtime.connect(call_id=call_id) as sideband:
        return await sideband.recv()


async def test_relayed_refusals_keep_their_code(
    pair: tuple[RunningServer, RunningServer], prefix: str
) -> None:
    owner, other = pair
    # The directory names the owner, but the owner no longer has the call.
    async with redis_state(prefix) as shared:
        await shared.register_call("rtc_gone", f"http://127.0.0.1:{owner.settings.port}", 30)
        event = await first_sideband_event(other, "rtc_gone")
        assert event.type == "error"
        assert event.error.code == "call_not_found"
        # A wrong key is refused by the owner, through the relay.
        await shared.register_call("rtc_x", f"http://127.0.0.1:{owner.settings.port}", 30)
        event = await first_sideband_event(other, "rtc_x", key="sk-wrong")
        assert event.error.code == "invalid_api_key"


async def test_an_unreachable_owner_is_a_clear_error(
    pair: tuple[RunningServer, RunningServer], prefix: str
) -> None:
    _, other = pair
    async with redis_state(prefix) as shared:
        await shared.register_call("rtc_lost", f"http://127.0.0.1:{free_port()}", 30)
        event = await first_sideband_event(other, "rtc_lost")
    assert event.type == "error"
    assert event.error.code == "call_owner_unreachable"


async def test_shared_state_follows_the_settings(prefix: str) -> None:
    memory = await replicas.open_shared_state(Settings())
    assert isinstance(memory, MemorySharedState)
    redis = await replicas.open_shared_state(Settings(redis_url=REDIS_URL, redis_prefix=prefix))
    try:
        assert isinstance(redis, RedisSharedState)
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_stops_the_server_with_a_clear_message() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(SettingsError, match="VOXGATE_REDIS_URL: cannot reach Redis") as info:
        await replicas.open_shared_state(Settings(redis_url=url))
    assert "hunter2" not in str(info.value)


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="redis_url 'localhost:6379' must start with redis://"):
        Settings(redis_url="localhost:6379")
    with pytest.raises(ValueError, match="advertise_url"):
        Settings(advertise_url="10.0.0.1:8000")


def test_the_advertised_url() -> None:
    assert replicas.advertised_url(Settings(port=8100)) == "http://127.0.0.1:8100"
    explicit = Settings(advertise_url="https://replica-a.internal:8443/")
    assert replicas.advertised_url(explicit) == "https://replica-a.internal:8443"
    wildcard = replicas.advertised_url(Settings(host="0.0.0.0", port=8000, api_keys=["k"]))
    assert not wildcard.startswith("http://0.0.0.0")
    assert wildcard.endswith(":8000")
