"""Audit records: every admission decision, key and tenant change, minting, revocation,
budget warning and cut-off, session end and deletion, written once as a typed record.

Records carry ids, prefixes and hashes only, never a key, a secret or a raw safety
identifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class AuditRecord:
    action: str
    key_id: str | None = None
    tenant: str | None = None
    user_hash: str | None = None
    session_id: str | None = None
    code: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "key_id": self.key_id,
            "tenant": self.tenant,
            "user_hash": self.user_hash,
            "session_id": self.session_id,
            "code": self.code,
            "detail": self.detail,
            "at": self.at,
        }


class AuditSink(Protocol):
    def record(self, rec: AuditRecord) -> None:
        """Take a record; never blocks (a bounded background recorder writes it)."""
