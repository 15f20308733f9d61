"""The fault-injecting proxy the failover tests put in front of an upstream: it forwards
HTTP and WebSocket traffic untouched until told to refuse, drop, stall or vanish."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from _fault_proxy import FaultProxy
from conftest import RunningServer
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.testing import ScriptedTTS
from voxgate.session.engines import EngineSet


@pytest.fixture
def proxy(start_server: Callable[..., RunningServer]) -> Iterator[FaultProxy]:
    server = start_server(EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS()))
    with FaultProxy("127.0.0.1", server.settings.port) as proxy:
        yield proxy


def ask(ws: ClientConnection, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    ws.send(json.dumps({"type": "response.create"}))


def until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        event = json.loads(ws.recv(timeout=10))
        seen.append(event)
        if event["type"] == kind:
            return seen


def test_forwards_http_and_websocket_untouched(proxy: FaultProxy) -> None:
    assert httpx.get(f"{proxy.http_url}/healthz", timeout=5).is_success
    with connect(proxy.ws_url, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        ask(ws, "Hello there.")
        done = until(ws, "response.done")[-1]
        assert done["response"]["status"] == "completed"
    assert "response.output_audio.delta" in proxy.forwarded
    assert proxy.faults == []


@pytest.mark.parametrize("status", [401, 403, 429, 503])
def test_refuses_new_connections_with_a_status(proxy: FaultProxy, status: int) -> None:
    proxy.refuse(status)
    with pytest.raises(InvalidStatus) as info, connect(proxy.ws_url, open_timeout=5):
        pass
    assert info.value.response.status_code == status
    assert httpx.get(f"{proxy.http_url}/healthz", timeout=5).status_code == status
    proxy.heal()
    assert httpx.get(f"{proxy.http_url}/healthz", timeout=5).is_success


def test_drops_the_connection_after_an_event(proxy: FaultProxy) -> None:
    proxy.drop_after("response.output_audio.delta")
    with connect(proxy.ws_url, open_timeout=5) as ws:
        ws.recv(timeout=10)
        ask(ws, "Hello there.")
        seen = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                seen.append(json.loads(ws.recv(timeout=10))["type"])
    assert seen[-1] == "response.output_audio.delta"
    assert "response.done" not in seen
    assert info.value.rcvd is None  # no close frame: the peer vanished
    assert proxy.wait_fault().kind == "drop"


def test_stall_keeps_the_socket_open_and_silent(proxy: FaultProxy) -> None:
    proxy.stall_after("response.created")
    with connect(proxy.ws_url, open_timeout=5) as ws:
        ws.recv(timeout=10)
        ask(ws, "Hello there.")
        assert until(ws, "response.created")[-1]["type"] == "response.created"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)
        # Pings reach the upstream; its pong is swallowed like everything else it sends.
        assert not ws.ping().wait(0.5)
    assert proxy.wait_fault().kind == "stall"
    # The upstream went on answering behind the stall.
    assert "response.done" not in proxy.forwarded


def test_unreachable_then_healed(proxy: FaultProxy) -> None:
    proxy.unreachable()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proxy.http_url}/healthz", timeout=5)
    proxy.heal()
    assert httpx.get(f"{proxy.http_url}/healthz", timeout=5).is_success
