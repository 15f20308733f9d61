"""The HTTP side of an upstream Realtime service, for calls whose media goes to it directly:
create a WebRTC call (``POST /v1/realtime/calls``), mint a client secret
(``POST /v1/realtime/client_secrets``), hang a call up, and open a sideband WebSocket on a
call (``/v1/realtime?call_id=``).

The upstream's key goes only into the requests to the upstream. What comes back to be shown
to a client (`UpstreamRefused`) never holds it: an upstream's own error message may quote
the credential it was sent, so refusals of the credential are replaced by a message of our
own and any other message has the key cut out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect

# Set-up requests to the upstream: connecting, and waiting for its answer.
HTTP_TIMEOUT_S = 15.0
SAFETY_HEADER = "OpenAI-Safety-Identifier"
# A sideband carries every server event of the call, audio deltas included when the call
# has no media track of its own; the same bound as the server's own WebSocket frames.
SIDEBAND_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamEndpoint:
    """Where an upstream lives and how to authenticate to it."""

    name: str
    url: str  # its Realtime WebSocket URL, e.g. wss://api.openai.com/v1/realtime
    api_key: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def http_base(self) -> str:
        """The REST base next to the WebSocket URL: ``wss://h/v1/realtime`` → ``https://h/v1``."""
        parts = urlsplit(self.url)
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/").removesuffix("/realtime")
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    def request_headers(self, safety_identifier: str | None) -> dict[str, str]:
        headers = {**self.headers, "Authorization": f"Bearer {self.api_key}"}
        if safety_identifier:
            headers[SAFETY_HEADER] = safety_identifier
        return headers


class UpstreamRefused(Exception):
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


def _refusal(endpoint: UpstreamEndpoint, what: str, response: httpx.Response) -> UpstreamRefused:
    status = response.status_code
    if status in (401, 403):
        # The server's own credential was refused: the operator's problem, not the client's.
        return UpstreamRefused(
            502,
            "upstream_auth_failed",
            f"The upstream '{endpoint.name}' refused this server's credentials for {what}; "
            "the operator must check its api_key.",
        )
    detail = ""
    try:
        error = response.json().get("error") or {}
        detail = str(error.get("message") or "")
    except (ValueError, AttributeError):
        detail = response.text[:300]
    detail = detail.replace(endpoint.api_key, "[redacted]") if endpoint.api_key else detail
    # The client's own mistakes (a bad offer or session) keep their status; the rest is ours.
    shown = status if status in (400, 404, 409, 413, 415, 422, 429) else 502
    code = "upstream_refused" if shown == 502 else "upstream_rejected_request"
    return UpstreamRefused(
        shown, code, f"The upstream '{endpoint.name}' refused {what} (HTTP {status}): {detail}"
    )


async def _post(endpoint: UpstreamEndpoint, path: str, what: str, **kwargs: Any) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            response = await http.post(f"{endpoint.http_base}{path}", **kwargs)
    except httpx.HTTPError as exc:
        raise UpstreamRefused(
            502,
            "upstream_unreachable",
            f"The upstream '{endpoint.name}' could not be reached for {what} "
            f"({type(exc).__name__}).",
        ) from None
    if not response.is_success:
        raise _refusal(endpoint, what, response)
    return response


async def create_call(
    endpoint: UpstreamEndpoint,
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
        endpoint,
        "/realtime/calls",
        "the call",
        files=parts,
        headers=endpoint.request_headers(safety_identifier),
    )
    location = response.headers.get("location", "")
    call_id = urlsplit(location).path.rstrip("/").rpartition("/")[2]
    if not call_id or not response.text.strip():
        raise UpstreamRefused(
            502,
            "upstream_bad_answer",
            f"The upstream '{endpoint.name}' answered the call without an SDP answer or a "
            "Location header.",
        )
    return UpstreamCall(call_id, response.text)


async def mint_client_secret(
    endpoint: UpstreamEndpoint, body: dict[str, Any], safety_identifier: str | None
) -> dict[str, Any]:
    """The upstream's client secret (``value``, ``expires_at``, ``session``)."""
    response = await _post(
        endpoint,
        "/realtime/client_secrets",
        "the client secret",
        json=body,
        headers=endpoint.request_headers(safety_identifier),
    )
    try:
        minted = response.json()
    except ValueError:
        minted = None
    if not isinstance(minted, dict) or not isinstance(minted.get("value"), str):
        raise UpstreamRefused(
            502,
            "upstream_bad_answer",
            f"The upstream '{endpoint.name}' answered the client secret request without one.",
        )
    return minted


async def hang_up(endpoint: UpstreamEndpoint, call_id: str) -> None:
    """End an upstream call. A call the upstream no longer knows (404) is already over."""
    try:
        await _post(
            endpoint,
            f"/realtime/calls/{call_id}/hangup",
            "the hang-up",
            headers=endpoint.request_headers(None),
        )
    except UpstreamRefused as exc:
        if exc.status != 404:
            raise


async def open_sideband(
    endpoint: UpstreamEndpoint, call_id: str, safety_identifier: str | None
) -> ClientConnection:
    """A WebSocket on the upstream call: every server event of the call, and client events
    sent on it join the call's."""
    parts = urlsplit(endpoint.url)
    url = urlunsplit(parts._replace(query=urlencode({"call_id": call_id})))
    try:
        return await connect(
            url,
            additional_headers=endpoint.request_headers(safety_identifier),
            max_size=SIDEBAND_MAX_MESSAGE_BYTES,
            open_timeout=HTTP_TIMEOUT_S,
        )
    except (OSError, TimeoutError) as exc:
        raise UpstreamRefused(
            502,
            "upstream_unreachable",
            f"The sideband to call {call_id} on the upstream '{endpoint.name}' could not be "
            f"opened ({type(exc).__name__}).",
        ) from None
    except Exception as exc:  # websockets' InvalidStatus / InvalidHandshake
        raise UpstreamRefused(
            502,
            "upstream_refused",
            f"The upstream '{endpoint.name}' refused the sideband to call {call_id} "
            f"({type(exc).__name__}).",
        ) from None
