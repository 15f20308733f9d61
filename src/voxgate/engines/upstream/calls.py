"""The HTTP side of an upstream Realtime service, for calls whose media goes to it directly:
create a WebRTC call (``POST /v1/realtime/calls``), mint a client secret
(``POST /v1/realtime/client_secrets``), hang a call up, and open a sideband WebSocket on a
call (``/v1/realtime?call_id=``).

The upstream's key goes only into the requests to the upstream. What comes back to be shown
to a client (`CallFailed`) never holds it: an upstream's own error message may quote
the credential it was sent, so refusals of the credential are replaced by a message of our
own and any other message has the key cut out.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect

from .base import Upstream

# websockets at DEBUG would log the handshake's headers (the key): held at WARNING.
_wire_log = logging.getLogger("voxgate.upstream.sideband")
_wire_log.setLevel(logging.WARNING)
# Set-up requests to the upstream: connecting, and waiting for its answer.
HTTP_TIMEOUT_S = 15.0
SAFETY_HEADER = "OpenAI-Safety-Identifier"
# A sideband carries every server event of the call, audio deltas included when the call
# has no media track of its own; the same bound as the server's own WebSocket frames.
SIDEBAND_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def http_base(upstream: Upstream) -> str:
    """The REST base next to the WebSocket URL: ``wss://h/v1/realtime`` → ``https://h/v1``."""
    parts = urlsplit(upstream.url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/").removesuffix("/realtime")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def request_headers(upstream: Upstream, safety_identifier: str | None) -> dict[str, str]:
    headers = dict(upstream.headers)
    if upstream.api_key:
        headers["Authorization"] = f"Bearer {upstream.api_key}"
    if safety_identifier:
        headers[SAFETY_HEADER] = safety_identifier
    return headers


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every request: building one loads the CA bundle (~40 ms), which
    would add that much to every call set-up."""
    return httpx.create_ssl_context()


class CallFailed(Exception):
    """The upstream could not be reached or refused a request; the message is safe to show
    a client (it names the upstream, never its credential)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    call_id: str
    answer_sdp: str


def _refusal(upstream: Upstream, what: str, response: httpx.Response) -> CallFailed:
    status = response.status_code
    if status in (401, 403):
        # The server's own credential was refused: the operator's problem, not the client's.
        return CallFailed(
            502,
            "upstream_auth_failed",
            f"The upstream '{upstream.name}' refused this server's credentials for {what}; "
            "the operator must check its api_key.",
        )
    detail = ""
    try:
        error = response.json().get("error") or {}
        detail = str(error.get("message") or "")
    except (ValueError, AttributeError):
        detail = response.text[:300]
    detail = detail.replace(upstream.api_key, "[redacted]") if upstream.api_key else detail
    # The client's own mistakes (a bad offer or session) keep their status; the rest is ours.
    shown = status if status in (400, 404, 409, 413, 415, 422, 429) else 502
    code = "upstream_refused" if shown == 502 else "upstream_rejected_request"
    return CallFailed(
        shown, code, f"The upstream '{upstream.name}' refused {what} (HTTP {status}): {detail}"
    )


async def _post(upstream: Upstream, path: str, what: str, **kwargs: Any) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, verify=_tls()) as http:
            response = await http.post(f"{http_base(upstream)}{path}", **kwargs)
    except httpx.HTTPError as exc:
        raise CallFailed(
            502,
            "upstream_unreachable",
            f"The upstream '{upstream.name}' could not be reached for {what} "
            f"({type(exc).__name__}).",
        ) from None
    if not response.is_success:
        raise _refusal(upstream, what, response)
    return response


async def create_call(
    upstream: Upstream,
    offer: str,
    session: dict[str, Any],
    safety_identifier: str | None,
) -> UpstreamCall:
    """Forward an SDP offer with its session configuration, as the ``openai`` SDK sends it
    (multipart: ``sdp`` and ``session``)."""
    parts = {
        "sdp": (None, offer.encode(), "application/sdp"),
        "session": (None, json.dumps(session).encode(), "application/json"),
    }
    response = await _post(
        upstream,
        "/realtime/calls",
        "the call",
        files=parts,
        headers=request_headers(upstream, safety_identifier),
    )
    location = response.headers.get("location", "")
    call_id = urlsplit(location).path.rstrip("/").rpartition("/")[2]
    if not call_id or not response.text.strip():
        raise CallFailed(
            502,
            "upstream_bad_answer",
            f"The upstream '{upstream.name}' answered the call without an SDP answer or a "
            "Location header.",
        )
    return UpstreamCall(call_id, response.text)


async def mint_client_secret(
    upstream: Upstream, body: dict[str, Any], safety_identifier: str | None
) -> dict[str, Any]:
    """The upstream's client secret (``value``, ``expires_at``, ``session``)."""
    response = await _post(
        upstream,
        "/realtime/client_secrets",
        "the client secret",
        json=body,
        headers=request_headers(upstream, safety_identifier),
    )
    try:
        minted = response.json()
    except ValueError:
        minted = None
    if not isinstance(minted, dict) or not isinstance(minted.get("value"), str):
        raise CallFailed(
            502,
            "upstream_bad_answer",
            f"The upstream '{upstream.name}' answered the client secret request without one.",
        )
    return minted


async def hang_up(upstream: Upstream, call_id: str) -> None:
    """End an upstream call. A call the upstream no longer knows (404) is already over."""
    try:
        await _post(
            upstream,
            f"/realtime/calls/{call_id}/hangup",
            "the hang-up",
            headers=request_headers(upstream, None),
        )
    except CallFailed as exc:
        if exc.status != 404:
            raise


async def open_sideband(
    upstream: Upstream, call_id: str, safety_identifier: str | None
) -> ClientConnection:
    """A WebSocket on the upstream call: every server event of the call, and client events
    sent on it join the call's."""
    parts = urlsplit(upstream.url)
    url = urlunsplit(parts._replace(query=urlencode({"call_id": call_id})))
    try:
        return await connect(
            url,
            additional_headers=request_headers(upstream, safety_identifier),
            max_size=SIDEBAND_MAX_MESSAGE_BYTES,
            open_timeout=HTTP_TIMEOUT_S,
            compression=None,
            logger=_wire_log,
        )
    except (OSError, TimeoutError) as exc:
        raise CallFailed(
            502,
            "upstream_unreachable",
            f"The sideband to call {call_id} on the upstream '{upstream.name}' could not be "
            f"opened ({type(exc).__name__}).",
        ) from None
    except Exception as exc:  # websockets' InvalidStatus / InvalidHandshake
        raise CallFailed(
            502,
            "upstream_refused",
            f"The upstream '{upstream.name}' refused the sideband to call {call_id} "
            f"({type(exc).__name__}).",
        ) from None
