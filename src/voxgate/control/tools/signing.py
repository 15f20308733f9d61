"""The signature voxgate puts on every HTTP tool call, and the idempotency key of an action.

Scheme (docs/tools.md): ``X-Voxgate-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>``
is HMAC-SHA256, keyed with the tools signing secret, over the bytes ``<t>.<body>`` (the
timestamp in decimal, a dot, then the exact request body). The body holds the arguments and
the caller's identity, so both are covered. A verifier recomputes the MAC, compares in
constant time, and refuses timestamps older than its tolerance (replays).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Voxgate-Signature"
TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: float = TOLERANCE_S
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made within ``tolerance_s``."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, f"t={timestamp},v1={fields.get('v1', '')}")


def idempotency_key(session_id: str, action_id: str) -> str:
    """One key per action: a retry of the same action carries the same key, so neither
    voxgate nor the tool service runs it twice."""
    return hashlib.sha256(f"{session_id}:{action_id}".encode()).hexdigest()[:32]
