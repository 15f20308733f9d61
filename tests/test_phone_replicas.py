"""Phone calls on two replicas sharing Redis: a Twilio media token used on one replica is
refused by the other, and the hosted API's call control for a SIP call (``accept``,
``reject``, ``refer``, ``hangup`` through the official SDK) reaches the replica whose SIP
endpoint holds the call, whichever replica it is sent to; an owner that cannot be reached is
a 502 that names it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from openai import APIStatusError, AsyncOpenAI
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from _controls import engines as scripted_engines
from _realtime import Events
from _shared_state import REDIS_URL, own_prefix, redis_state
from _sip import finish, require_sipp, sipp
from _twilio import Webhook, connect_stream, post_webhook
from _webhooks import WebhookReceiver
from conftest import RunningServer

KEY = "sk-phone-replicas"
NUMBER = "+15557654321"
SECRET = "whsec_" + "c2VjcmV0LWZvci1yZXBsaWNhcw=="
AUTH_TOKEN = "twilio-auth-token-for-replicas"


prefix = pytest.fixture(own_prefix)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def pair(start_server: Any, prefix: str, **settings: Any) -> tuple[RunningServer, RunningServer]:
    """Two servers on one Redis prefix (scripted engines: what is tested is which replica
    acts, not what is said)."""
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix, "api_keys": [KEY], **settings}
    return (
        start_server(scripted_engines(), **shared),
        start_server(scripted_engines(), **shared),
    )


async def stream_once(server: RunningServer, call_sid: str, token: str) -> tuple[int, str]:
    """Open a media stream as Twilio does (connected, start with the token) and stop it;
    how the server closed the socket."""
    url = f"ws://127.0.0.1:{server.settings.port}/v1/twilio/media"
    start = {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"voxgate_token": token},
    }
    async with websockets.connect(url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):  # (a refusal closes at once)
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start}))
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2", "stop": {}}))
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or ""


async def test_a_twilio_media_token_used_on_one_replica_is_refused_by_the_other(
    start_server: Any, prefix: str
) -> None:
    twilio = {"auth_token": AUTH_TOKEN, "key": KEY}
    a, b = pair(start_server, prefix, twilio=twilio)
    webhook = Webhook()
    answer = await post_webhook(f"{a.base_url}/twilio/voice", AUTH_TOKEN, webhook)
    assert answer.status_code == 200, answer.text
    token = connect_stream(answer.text).parameters["voxgate_token"]
    # The token admits its stream once, on the replica Twilio reaches first ...
    assert await stream_once(a, webhook.call_sid, token) == (1000, "session ended")
    # ... and a replay is refused there and on the other replica alike.
    assert await stream_once(b, webhook.call_sid, token) == (1008, "invalid_media_token")
    assert await stream_once(a, webhook.call_sid, token) == (1008, "invalid_media_token")


def sip_settings(receiver: WebhookReceiver, rtp_ports: str) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "rtp_ports": rtp_ports,
        "webhook_secret": SECRET,
        "accept_timeout_s": 20,
        "trunks": [{"name": "carrier", "allowed_sources": ["127.0.0.0/8"], "key": KEY}],
        "routes": [{"number": NUMBER, "webhook": receiver.url}],
    }


def sip_replica(
    start_server: Any, prefix: str, receiver: WebhookReceiver, rtp_ports: str
) -> RunningServer:
    """One replica on the Redis `prefix` (scripted engines) with a SIP endpoint that announces
    calls to `receiver`'s webhook and takes media ports from `rtp_ports`."""
    sip = sip_settings(receiver, rtp_ports)
    return start_server(
        scripted_engines(), redis_url=REDIS_URL, redis_prefix=prefix, api_keys=[KEY], sip=sip
    )


async def incoming(client: AsyncOpenAI, receiver: WebhookReceiver) -> str:
    body, headers = await receiver.next()
    event = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert isinstance(event, RealtimeCallIncomingWebhookEvent)
    return event.data.call_id


async def test_sip_call_control_sent_to_another_replica_reaches_the_owner(
    start_server: Any, prefix: str, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    require_sipp()
    owner = sip_replica(start_server, prefix, receiver, "32000-32499")
    other = sip_replica(start_server, prefix, receiver, "32500-32999")
    target = f"127.0.0.1:{owner.app.state.voxgate.sip.port}"
    async with AsyncOpenAI(base_url=other.base_url, api_key=KEY, max_retries=0) as client:
        # The caller reaches the owner's SIP endpoint; every call-control request goes to the
        # other replica.
        with sipp("uac_transfer", target, "-s", NUMBER, cwd=tmp_path) as caller:
            call_id = await incoming(client, receiver)
            await client.realtime.calls.accept(call_id, type="realtime", instructions="Bakery.")
            async with client.realtime.connect(call_id=call_id) as sideband:
                created = await Events(sideband).expect("session.created")
                assert created.session.instructions == "Bakery."
                await client.realtime.calls.refer(call_id, target_uri="sip:human@example.com")
                await client.realtime.calls.hangup(call_id)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        # SIPp saw 200 OK, the REFER (202) and the BYE: the owner acted on each request.
        assert caller.returncode == 0, result
        assert call_id not in other.app.state.voxgate.sip.calls

        with sipp("uac_busy", target, "-s", NUMBER, cwd=tmp_path) as caller:
            call_id = await incoming(client, receiver)
            await client.realtime.calls.reject(call_id, status_code=486)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        assert caller.returncode == 0, result  # the caller got 486 Busy Here

        with sipp("uac_declined", target, "-s", NUMBER, cwd=tmp_path) as caller:
            call_id = await incoming(client, receiver)
            await client.realtime.calls.hangup(call_id)  # unanswered: declined (603)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        assert caller.returncode == 0, result

        # Gone calls leave the directory: asking either replica is a plain 404.
        with pytest.raises(APIStatusError) as gone:
            await client.realtime.calls.accept(call_id, type="realtime")
        assert gone.value.status_code == 404
    assert not owner.app.state.voxgate.sip.calls


async def test_call_control_for_an_unreachable_owner_names_it(
    start_server: Any, prefix: str, receiver: WebhookReceiver
) -> None:
    server = sip_replica(start_server, prefix, receiver, "32000-32999")
    gone_owner = "http://127.0.0.1:9"  # the discard port: nothing answers HTTP there
    async with redis_state(prefix) as shared:
        await shared.register_call("rtc_elsewhere", gone_owner, 30)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as http:
            for action, body in [
                ("accept", {"type": "realtime"}),
                ("reject", {"status_code": 486}),
                ("refer", {"target_uri": "sip:human@example.com"}),
                ("hangup", None),
            ]:
                answer = await http.post(f"/realtime/calls/rtc_elsewhere/{action}", json=body)
                assert answer.status_code == 502, (action, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "call_owner_unreachable"
                assert gone_owner in error["message"] and action in error["message"]
