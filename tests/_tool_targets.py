"""Python tool targets for the server-tools tests (``target = "_tool_targets:..."``)."""

from __future__ import annotations

import asyncio

ORDERS = {"A17": "shipped yesterday"}
calls: list[str] = []


async def lookup_order(order_id: str) -> dict[str, str]:
    calls.append(order_id)
    await asyncio.sleep(0)
    return {"order": order_id, "status": ORDERS.get(order_id, "unknown")}


# A gate the concurrency test holds closed while it counts calls in flight.
gate: asyncio.Event | None = None
full: asyncio.Event | None = None  # set when two calls are in flight at once
in_flight = 0
most_in_flight = 0


async def held(n: int) -> int:
    global in_flight, most_in_flight
    in_flight += 1
    most_in_flight = max(most_in_flight, in_flight)
    if in_flight >= 2 and full is not None:
        full.set()
    try:
        assert gate is not None
        await gate.wait()
        return n
    finally:
        in_flight -= 1


def big() -> str:
    return "x" * 100_000
