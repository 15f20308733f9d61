"""The hosted API's SIP webhook flow against voxgate, driven by the official `openai` SDK: a
SIPp call to a webhook route posts ``realtime.call.incoming`` (verified by
``client.webhooks.unwrap``); ``calls.accept`` answers it and starts the session (a sideband
attaches by call id), ``calls.refer`` sends a SIP REFER, ``calls.hangup`` a BYE, and
``calls.reject`` answers a second call with the chosen SIP status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, InvalidWebhookSignatureError
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from _realtime import Events
from _sip import finish, require_sipp, sipp
from _webhooks import WebhookReceiver
from conftest import RunningServer

pytestmark = pytest.mark.slow

NUMBER = "+15557654321"
KEY = "sk-operator"
SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtd2ViaG9vaw=="


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.stop()


def webhook_server(
    start_server: Any, receiver: WebhookReceiver, accept_timeout_s: float = 20
) -> RunningServer:
    require_sipp()
    sip = {
        "listen": "127.0.0.1:0",
        "rtp_ports": "32000-32999",
        "webhook_secret": SECRET,
        "accept_timeout_s": accept_timeout_s,
        "trunks": [{"name": "carrier", "allowed_sources": ["127.0.0.0/8"], "key": KEY}],
        "routes": [{"number": NUMBER, "webhook": receiver.url}],
    }
    srv: RunningServer = start_server(api_keys=[KEY], sip=sip)
    return srv


async def test_webhook_accept_refer_hangup_and_reject(
    start_server: Any, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    srv = webhook_server(start_server, receiver)
    target = f"127.0.0.1:{srv.app.state.voxgate.sip.port}"
    async with AsyncOpenAI(base_url=srv.base_url, api_key=KEY) as client:
        with sipp("uac_transfer", target, "-s", NUMBER, cwd=tmp_path) as caller:
            body, headers = await receiver.next()
            event = client.webhooks.unwrap(body, headers, secret=SECRET)
            assert isinstance(event, RealtimeCallIncomingWebhookEvent)
            call_id = event.data.call_id
            sip_headers = {h.name: h.value for h in event.data.sip_headers}
            assert sip_headers["X-Customer-Id"] == "4711"
            assert NUMBER in sip_headers["To"]
            # A forged or altered body does not verify.
            with pytest.raises(InvalidWebhookSignatureError):
                client.webhooks.unwrap(body.replace(b"4711", b"4712"), headers, secret=SECRET)

            await client.realtime.calls.accept(
                call_id, type="realtime", instructions="You answer the phone for a bakery."
            )
            async with client.realtime.connect(call_id=call_id) as sideband:
                side = Events(sideband)
                created = await side.expect("session.created")
                assert created.session.instructions == "You answer the phone for a bakery."
                # The line's G.711 both ways by default: no detour through 24 kHz PCM16.
                audio = created.session.audio
                assert audio is not None and audio.input is not None and audio.output is not None
                assert audio.input.format is not None and audio.output.format is not None
                assert (audio.input.format.type, audio.output.format.type) == (
                    "audio/pcmu",
                    "audio/pcmu",
                )
                await client.realtime.calls.refer(call_id, target_uri="sip:human@example.com")
                await client.realtime.calls.hangup(call_id)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        # SIPp saw 200 OK, a REFER to the human (202), then a BYE (200): the scenario passed.
        assert caller.returncode == 0, result

        with sipp("uac_busy", target, "-s", NUMBER, cwd=tmp_path) as caller:
            body, headers = await receiver.next()
            event = client.webhooks.unwrap(body, headers, secret=SECRET)
            assert isinstance(event, RealtimeCallIncomingWebhookEvent)
            await client.realtime.calls.reject(event.data.call_id, status_code=486)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        assert caller.returncode == 0, result  # the caller got 486 Busy Here
        # The rejected call is gone: accepting it now is a clear 404.
        with pytest.raises(Exception) as gone:
            await client.realtime.calls.accept(event.data.call_id, type="realtime")
        assert getattr(gone.value, "status_code", None) == 404
        assert json.loads(gone.value.response.text)["error"]["code"] == "call_not_found"  # type: ignore[attr-defined]


async def test_unaccepted_calls_are_declined_by_hangup_or_timeout(
    start_server: Any, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    srv = webhook_server(start_server, receiver, accept_timeout_s=1.5)
    target = f"127.0.0.1:{srv.app.state.voxgate.sip.port}"
    async with AsyncOpenAI(base_url=srv.base_url, api_key=KEY) as client:
        # Hanging up a call that still rings declines it (603) ...
        with sipp("uac_declined", target, "-s", NUMBER, cwd=tmp_path) as caller:
            body, headers = await receiver.next()
            event = client.webhooks.unwrap(body, headers, secret=SECRET)
            assert isinstance(event, RealtimeCallIncomingWebhookEvent)
            await client.realtime.calls.hangup(event.data.call_id)
            result = await asyncio.to_thread(finish, caller, tmp_path)
        assert caller.returncode == 0, result
        # ... and one nobody accepts within accept_timeout_s gets 480.
        with sipp("uac_unanswered", target, "-s", NUMBER, cwd=tmp_path) as caller:
            await receiver.next()
            result = await asyncio.to_thread(finish, caller, tmp_path)
        assert caller.returncode == 0, result
    assert not srv.app.state.voxgate.sip.calls and not srv.app.state.voxgate.manager.sessions
