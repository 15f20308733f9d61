"""The ``realtime.call.incoming`` webhook of a webhook-routed SIP call: the event the hosted
API sends (the ``openai`` SDK's `RealtimeCallIncomingWebhookEvent`), signed the
standard-webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">``) so the SDK's ``client.webhooks.unwrap`` verifies it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import httpx

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 10.0
# Credentials are not call metadata: they stay out of the event (as with the hosted API).
_HIDDEN_HEADERS = {"authorization", "proxy-authorization"}


def incoming_event(call_id: str, headers: list[tuple[str, str]], now: float) -> dict[str, Any]:
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "created_at": int(now),
        "type": "realtime.call.incoming",
        "data": {
            "call_id": call_id,
            "sip_headers": [
                {"name": name, "value": value}
                for name, value in headers
                if name.lower() not in _HIDDEN_HEADERS
            ],
            "sip_media_security": "rtp",
        },
    }


def signature_headers(secret: str, body: str, now: float) -> dict[str, str]:
    """The standard-webhooks headers for ``body``. A ``whsec_`` secret is base64 (as the
    hosted API hands them out); any other string is used as its bytes."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    webhook_id = "wh_" + secrets.token_hex(12)
    timestamp = str(int(now))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


async def deliver(url: str, secret: str, event: dict[str, Any]) -> str | None:
    """POST the event; None when the receiver took it (2xx), else what went wrong."""
    body = json.dumps(event, separators=(",", ":"))
    headers = signature_headers(secret, body, time.time())
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"webhook {url} unreachable: {exc}"
    if not response.is_success:
        return f"webhook {url} answered {response.status_code}"
    return None
