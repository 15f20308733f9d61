"""WebRTC calls and keys: a client secret opens a call bound to its configuration, and a
call belongs to its caller — hang-up and sideband attach need the key that created it, a
key of the same tenant, or an admin key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from _controls import MODEL, Admin, client, keyed_server, next_event
from voxgate.call.webrtc import WebRTCPeer, call_id_from_location

BOUND = {
    "type": "realtime",
    "model": MODEL,
    "instructions": "Only talk about the weather.",
    "audio": {"output": {"voice": "marin"}},
}


@pytest.fixture
async def keys(start_server: Any, database_url: str) -> Any:
    server = keyed_server(start_server, database_url)
    admin = Admin(server)
    scopes = ["realtime", "client_secrets"]
    made = {
        "owner": await admin.create_key(name="owner", tenant="acme", scopes=scopes),
        "colleague": await admin.create_key(name="colleague", tenant="acme"),
        "stranger": await admin.create_key(name="stranger", tenant="globex"),
    }
    yield server, admin, {name: k["key"] for name, k in made.items()}
    await admin.aclose()


async def open_call(server: Any, key: str, peer: WebRTCPeer) -> str:
    """A call set up through the SDK with this credential; its id."""
    async with client(server, key) as c:
        raw = await c.realtime.calls.with_raw_response.create(sdp=await peer.create_offer())
        assert raw.status_code == 201, raw.text
        await peer.accept_answer(raw.parse().text)
    await peer.events.wait_open()
    return call_id_from_location(raw.headers["location"])


async def test_a_client_secret_opens_a_webrtc_call_bound_to_its_configuration(keys: Any) -> None:
    server, _, key = keys
    async with client(server, key["owner"]) as c:
        secret = await c.realtime.client_secrets.create(session=BOUND)  # type: ignore[arg-type]
    async with WebRTCPeer() as peer:
        await open_call(server, secret.value, peer)
        created = await peer.events.next()
        assert created.type == "session.created"
        assert created.data["session"]["instructions"] == BOUND["instructions"]
        assert created.data["session"]["audio"]["output"]["voice"] == "marin"
        peer.send({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}})
        error = await peer.events.next()
        assert error.type == "error"
        assert error.data["error"]["code"] == "bound_by_client_secret"
    # The secret's one use is spent: a second call is refused before any media is set up.
    async with httpx.AsyncClient() as http, WebRTCPeer() as second:
        refused = await http.post(
            f"{server.base_url}/realtime/calls",
            content=await second.create_offer(),
            headers={"Authorization": f"Bearer {secret.value}", "Content-Type": "application/sdp"},
        )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "client_secret_used"


async def test_only_the_owner_its_tenant_or_an_admin_may_hang_up(keys: Any) -> None:
    server, admin, key = keys
    async with WebRTCPeer() as peer, httpx.AsyncClient(base_url=server.base_url) as http:
        call_id = await open_call(server, key["owner"], peer)

        def hang_up(credential: str) -> Any:
            return http.post(
                f"/realtime/calls/{call_id}/hangup",
                headers={"Authorization": f"Bearer {credential}"},
            )

        stranger = await hang_up(key["stranger"])
        assert stranger.status_code == 403
        assert stranger.json()["error"]["code"] == "call_not_owned"
        colleague = await hang_up(key["colleague"])  # same tenant, realtime scope
        assert colleague.status_code == 200
    async with WebRTCPeer() as peer, httpx.AsyncClient(base_url=server.base_url) as http:
        call_id = await open_call(server, key["owner"], peer)
        done = await http.post(
            f"/realtime/calls/{call_id}/hangup", headers=dict(admin.http.headers)
        )
        assert done.status_code == 200


async def test_sideband_attach_needs_the_calls_owner(keys: Any) -> None:
    server, _, key = keys
    async with WebRTCPeer() as peer:
        call_id = await open_call(server, key["owner"], peer)
        async with client(server, key["stranger"]) as c, c.realtime.connect(call_id=call_id) as sb:
            refused = await next_event(sb)
            assert (refused.type, refused.error.code) == ("error", "call_not_owned")
        async with client(server, key["owner"]) as c, c.realtime.connect(call_id=call_id) as sb:
            assert (await next_event(sb)).type == "session.created"
