"""Hostile clients against a real server: clients that stop reading cannot hold their
session slots past the idle timeout (plus the close deadline), and a sideband client's bad
frames never end the WebRTC call it is attached to."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import httpx
import numpy as np
import websockets
from openai import AsyncOpenAI

from conftest import RunningServer
from voxgate.call.webrtc import WebRTCPeer, post_offer

KEY = "sk-test"
BIG = "x" * 1_000_000


async def sessions(server: RunningServer) -> int:
    async with httpx.AsyncClient() as http:
        health = await http.get(f"http://127.0.0.1:{server.settings.port}/healthz")
    count: int = health.json()["sessions"]
    return count


def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455 §5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), size)
    return head + mask + masked.tobytes()


async def deaf_client(server: RunningServer) -> asyncio.StreamWriter:
    """A client that asks for ~20 MB of output and then reads nothing: a raw socket with a
    small receive buffer, so the kernel holds little of what it does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.settings.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": BIG}]}
    create = {"type": "conversation.item.create", "item": {**item, "id": "big"}}
    writer.write(ws_frame(json.dumps(create)))
    for _ in range(20):
        retrieve = {"type": "conversation.item.retrieve", "item_id": "big"}
        writer.write(ws_frame(json.dumps(retrieve)))
    await writer.drain()
    return writer


async def wait_for_sessions(server: RunningServer, count: int, within_s: float) -> None:
    """Poll /healthz, as an operator would, until it shows ``count`` sessions."""
    shown = -1
    for _ in range(int(within_s / 0.2)):
        if (shown := await sessions(server)) == count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"/healthz still shows {shown} sessions after {within_s} s")


async def test_clients_that_stop_reading_free_their_slots_after_the_idle_timeout(
    start_server: Any,
) -> None:
    # A large outgoing backlog is allowed here, so that only the idle timeout can end them.
    server = start_server(idle_timeout_s=2.0, max_sessions=3, max_outbox_mb=200.0)
    deaf = [await deaf_client(server) for _ in range(3)]
    try:
        assert await sessions(server) == 3
        # Idle timeout (2 s) + the close deadline (5 s): the slots are free well within 12 s.
        await wait_for_sessions(server, 0, within_s=12.0)
        async with websockets.connect(
            server.ws_url + "?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {KEY}"},
        ) as fresh:
            assert json.loads(await fresh.recv())["type"] == "session.created"
    finally:
        for writer in deaf:
            writer.transport.abort()


async def test_a_sideband_cannot_end_the_call_with_bad_frames(start_server: Any) -> None:
    server: RunningServer = start_server()
    async with httpx.AsyncClient() as http, WebRTCPeer() as peer:
        answer = await post_offer(http, server.base_url, await peer.create_offer(), api_key=KEY)
        await peer.accept_answer(answer.sdp)
        await peer.events.wait_open()
        client = AsyncOpenAI(api_key=KEY, base_url=server.base_url)
        async with client.realtime.connect(call_id=answer.call_id) as sideband:
            assert (await sideband.recv()).type == "session.created"
            frames = ['{"type": []}', '{"type": {}}', '{"type": "x", "event_id": "\\ud800"}']
            for frame in frames:
                await sideband.send_raw(frame)  # type: ignore[attr-defined]
                assert (await sideband.recv()).type == "error"
            # The call is alive: its peer still gets answers.
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
            peer.send({"type": "conversation.item.create", "item": item})
            peer.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
            done = (await peer.events.until("response.done"))[-1]
            assert done.data["response"]["status"] == "completed"
