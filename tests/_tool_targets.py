"""Python tool targets for the server-tools tests (``target = "_tool_targets:..."``)."""

from __future__ import annotations

import asyncio

ORDERS = {"A17": "shipped yesterday"}
calls: list[str] = []


async def lookup_order(order_id: str) -> dict[str, str]:
    calls.append(order_id)
    await asyncio.sleep(0)
    return {"order": order_id, "status": ORDERS.get(order_id, "unknown")}
