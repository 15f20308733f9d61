"""One ``rate_limits.updated`` for the client from two sources: the upstream's (a relayed
session) and voxgate's own budgets. Each source's latest entries are kept; an entry both
report (same ``name``) shows the tighter one (fewer remaining)."""

from __future__ import annotations

from typing import Any

Entries = list[dict[str, Any]]


class RateLimitBook:
    def __init__(self) -> None:
        self._upstream: Entries = []
        self._budget: Entries = []

    def from_upstream(self, entries: Entries) -> Entries:
        self._upstream = list(entries)
        return self.merged()

    def from_budget(self, entries: Entries) -> Entries:
        self._budget = list(entries)
        return self.merged()

    def merged(self) -> Entries:
        if not self._upstream:
            return list(self._budget)
        out = {str(e.get("name")): e for e in self._upstream}
        for entry in self._budget:
            name = str(entry.get("name"))
            theirs = out.get(name)
            if theirs is None or _remaining(entry) < _remaining(theirs):
                out[name] = entry
        return list(out.values())


def _remaining(entry: dict[str, Any]) -> float:
    value = entry.get("remaining")
    return float(value) if isinstance(value, int | float) else float("inf")
