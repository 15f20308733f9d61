"""Running as one of several replicas: which SharedState the server uses, how other replicas
reach this one, and the sideband attach to a call that another replica owns.

A WebRTC call lives in the process that answered its offer (the media and the session are
there). Each replica records its live calls in the shared call directory under its advertised
URL; a sideband client (``GET /v1/realtime?call_id=``) that reaches another replica is proxied
to the owner over a second WebSocket, message for message, both ways, and call control — a
hang-up, and a SIP call's accept, reject and refer — is forwarded to the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from urllib.parse import quote, urlsplit

import httpx
from fastapi import Request, Response, WebSocket
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from ..control.shared import MemorySharedState, SharedState
from ..settings import Settings, SettingsError
from ..storage.redis_state import RedisSharedState

log = logging.getLogger(__name__)

# Marks a sideband connection one replica opened to another: the receiver serves it locally
# or refuses, never forwards again (no loops between replicas with a stale directory).
FORWARDED_HEADER = "x-voxgate-forwarded-from"
# How long a dead replica's calls stay in the directory (renewed while the replica lives).
CALL_TTL_S = 30.0
# Client headers the owner needs to authenticate and attribute the attach.
_FORWARDED_HEADERS = ("authorization", "openai-safety-identifier")
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


async def open_shared_state(settings: Settings) -> SharedState:
    """Redis when ``redis_url`` is set (refusing to start if it cannot be reached, since
    limits would silently stop holding across replicas); otherwise in-process."""
    if settings.redis_url is None:
        return MemorySharedState()
    try:
        state = await RedisSharedState.connect(settings.redis_url, prefix=settings.redis_prefix)
    except (RedisError, OSError) as exc:
        where = urlsplit(settings.redis_url)._replace(netloc=_without_password(settings.redis_url))
        raise SettingsError(
            f"VOXGATE_REDIS_URL: cannot reach Redis at {where.geturl()}: {str(exc).rstrip('.')}. "
            "Start Redis, fix the URL, or unset it to run a single replica with in-process state."
        ) from exc
    log.info("shared state in Redis (prefix %r)", settings.redis_prefix)
    return state


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.password else ""
    return f"{user}{host}{port}"


def advertised_url(settings: Settings) -> str:
    if settings.advertise_url:
        return settings.advertise_url
    host = settings.host
    if host in _WILDCARD_HOSTS:
        host = socket.getfqdn()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


async def forget_call(shared: SharedState, call_id: str) -> None:
    """Take an ended call out of the directory (shielded: a cancelled call must still leave,
    or attaches to it would be relayed here until the entry expires)."""
    try:
        await asyncio.shield(shared.unregister_call(call_id))
    except Exception as exc:
        log.warning("call %s stays in the directory until it expires: %s", call_id, exc)


def forwarded(connection: HTTPConnection) -> bool:
    return FORWARDED_HEADER in connection.headers


def _forwarded_headers(connection: HTTPConnection, self_url: str) -> dict[str, str]:
    headers = {h: connection.headers[h] for h in _FORWARDED_HEADERS if h in connection.headers}
    headers[FORWARDED_HEADER] = self_url
    return headers


async def remote_owner(shared: SharedState, self_url: str, call_id: str) -> str | None:
    """The URL of the other replica that owns the call, if one does."""
    owner = await shared.call_owner(call_id)
    return owner if owner is not None and owner != self_url else None


async def proxy_attach(
    ws: WebSocket, owner: str, call_id: str, self_url: str, max_size: int
) -> tuple[str, str] | None:
    """Relay an accepted sideband WebSocket to the owning replica until either side closes.
    Returns ``(code, message)`` when the owner cannot be reached (nothing was relayed)."""
    url = _ws_url(owner) + "/v1/realtime?call_id=" + quote(call_id, safe="")
    headers = _forwarded_headers(ws, self_url)
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=[Subprotocol(p) for p in offered if p] or None,
            max_size=max_size,
            open_timeout=10,
            # Replicas talk directly at their advertised URLs, never through an HTTP proxy
            # the environment may name for outbound traffic.
            proxy=None,
        )
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        log.warning("sideband attach to call %s: owner %s unreachable: %s", call_id, owner, exc)
        return (
            "call_owner_unreachable",
            f"Call '{call_id}' is served by another replica that could not be reached; "
            "try again, or check that replicas reach each other at their advertised URLs.",
        )
    log.info("sideband attach to call %s relayed to %s", call_id, owner)
    async with upstream:
        await _relay(ws, upstream, call_id)
    return None


async def forward_action(
    request: Request, owner: str, call_id: str, action: str, self_url: str
) -> Response:
    """``POST /v1/realtime/calls/{call_id}/{action}`` (hangup, accept, reject, refer) for a
    call held by another replica: sent on to the owner with its body, and the owner's answer
    is ours. An owner that cannot be reached is a 502 that names it."""
    url = f"{owner}/v1/realtime/calls/{quote(call_id, safe='')}/{action}"
    headers = _forwarded_headers(request, self_url)
    if "content-type" in request.headers:
        headers["content-type"] = request.headers["content-type"]
    try:
        body = await request.body()
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            answer = await http.post(url, headers=headers, content=body)
    except httpx.HTTPError as exc:
        log.warning("%s of call %s: owner %s unreachable: %s", action, call_id, owner, exc)
        error = {
            "message": f"Call '{call_id}' is held by the replica at {owner}, which could not "
            f"be reached for this {action}; try again, or check that replicas reach each "
            "other at their advertised URLs.",
            "type": "server_error",
            "param": None,
            "code": "call_owner_unreachable",
        }
        return JSONResponse({"error": error}, status_code=502)
    log.info("%s of call %s forwarded to %s: %d", action, call_id, owner, answer.status_code)
    media_type = answer.headers.get("content-type")
    return Response(answer.content, status_code=answer.status_code, media_type=media_type)


async def elsewhere(
    shared: SharedState, request: Request, call_id: str, action: str, self_url: str
) -> Response | None:
    """The owner's answer to ``action`` when another replica holds the call (and this request
    was not itself forwarded); None when the call is not another replica's."""
    if forwarded(request):
        return None
    owner = await remote_owner(shared, self_url, call_id)
    if owner is None:
        return None
    return await forward_action(request, owner, call_id, action, self_url)


def _ws_url(http_url: str) -> str:
    return "ws" + http_url[len("http") :] if http_url.startswith("http") else http_url


async def _relay(ws: WebSocket, upstream: ClientConnection, call_id: str) -> None:
    """Both directions, one message at a time (no queue: a slow side pauses the other's
    reader). When either side ends, the other is closed with the same code."""
    tasks = [
        asyncio.create_task(_client_to_owner(ws, upstream), name=f"{call_id}:relay-up"),
        asyncio.create_task(_owner_to_client(ws, upstream), name=f"{call_id}:relay-down"),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _client_to_owner(ws: WebSocket, upstream: ClientConnection) -> None:
    code = 1000
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                break
            text, data = message.get("text"), message.get("bytes")
            await upstream.send(text if text is not None else (data or b""))
    except (WebSocketDisconnect, RuntimeError):
        pass
    except ConnectionClosed:
        return
    await upstream.close(_sendable(code))


async def _owner_to_client(ws: WebSocket, upstream: ClientConnection) -> None:
    try:
        async for message in upstream:
            if isinstance(message, str):
                await ws.send_text(message)
            else:
                await ws.send_bytes(message)
    except ConnectionClosed:
        pass
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client is gone; the other direction closes the owner's side
    code = upstream.close_code
    if code is None or code == 1006:  # no close frame: the owner died or the link broke
        code, reason = 1011, "the replica serving the call went away"
    else:
        code, reason = _sendable(code), upstream.close_reason or ""
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close(code, reason[:120])


def _sendable(code: int) -> int:
    """Close codes a peer may put on the wire (1005/1006/1015 are reserved for local use)."""
    return 1000 if code in (1005, 1006, 1015) else code
