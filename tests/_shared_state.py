"""Builds each SharedState implementation for the contract tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from voxgate.control.shared import MemorySharedState, SharedState


@contextlib.asynccontextmanager
async def make_shared_state(kind: str) -> AsyncIterator[SharedState]:
    if kind == "memory":
        state = MemorySharedState()
        try:
            yield state
        finally:
            await state.aclose()
        return
    raise ValueError(f"unknown shared state {kind!r}")
