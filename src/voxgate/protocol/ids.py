"""Identifiers with the prefixes OpenAI uses (`event_`, `sess_`, `resp_`, `item_`, …)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 22) -> str:
    """A random id such as ``item_Bx3…``. Clients treat ids as opaque strings."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
