"""What of an MCP call's arguments the audit log (and an approval's summary) may show: the
names an operator lists in ``sensitive_args``, and any name that looks secret whatever the
server calls it, are redacted."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from typing import Any

# Argument names whose values never reach the audit log in clear, whatever the server says.
_SENSITIVE_WORDS = frozenset(
    {"password", "passwd", "pass", "secret", "token", "apikey", "key", "card", "cvv", "ssn", "pin"}
)
REDACTED = "[redacted]"


def redact(arguments: str, sensitive: Collection[str]) -> Any:
    """The arguments as the audit log may hold them."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"unparsed_sha256": hashlib.sha256(arguments.encode()).hexdigest()}
    if not isinstance(value, dict):
        return REDACTED
    hidden = secret_names(value, sensitive)
    return {k: REDACTED if k in hidden else v for k, v in value.items()}


def secret_names(arguments: dict[str, Any], sensitive: Collection[str]) -> set[str]:
    """The argument names whose values are never shown."""
    return {k for k in arguments if k in sensitive or _looks_secret(k)}


def _looks_secret(name: str) -> bool:
    """A name with a secret-sounding word in it ("pin", "card_number", "apiKey"), as whole
    words, so "shipping" or "keyboard" stay in clear."""
    words = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)
    lowered = [w.lower() for w in words]
    joined = {a + b for a, b in zip(lowered, lowered[1:], strict=False)}
    return bool(_SENSITIVE_WORDS & (set(lowered) | joined))
