"""Giving a new upstream session an earlier one's conversation (failover, renewal): the
replay events go first, and the upstream's answers to them stay with the relay."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..engines.upstream import UpstreamConnection, UpstreamStalled
from .clock import Clock, within

log = logging.getLogger(__name__)
# Replayed items acknowledged within this long (on the session's clock), or the new
# upstream counts as stalled.
REPLAY_TIMEOUT_S = 10.0
Receive = Callable[[UpstreamConnection], Awaitable[tuple[str, dict[str, Any]]]]


async def replay(
    link: UpstreamConnection,
    events: Sequence[dict[str, Any]],
    name: str,
    recv: Receive,
    clock: Clock,
) -> None:
    """Send the replay events (``conversation.item.create``). Those whose item has an id are
    waited for until the upstream has taken them (its ``conversation.item.done``, or an
    ``error``); what it says about them is not relayed. Others are only sent ahead of the
    client's events."""
    pending: dict[str, str] = {}  # item id → the event id that created it
    for n, event in enumerate(events):
        item = event.get("item")
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            event = {**event, "event_id": f"event_replay_{n}"}
            pending[item["id"]] = event["event_id"]
        await link.send(json.dumps(event))

    async def answered() -> None:
        nonlocal pending
        while pending:
            _, data = await recv(link)
            if data.get("type") == "conversation.item.done":
                pending.pop(str((data.get("item") or {}).get("id")), None)
            elif data.get("type") == "error":
                error = data.get("error") or {}
                # Its code only: an upstream's message may quote a credential.
                log.warning("upstream %s refused a replayed item: %s", name, error.get("code"))
                failed = error.get("event_id")
                pending = {k: v for k, v in pending.items() if v != failed}

    try:
        await within(clock, REPLAY_TIMEOUT_S, answered())
    except TimeoutError:
        raise UpstreamStalled(
            f"upstream '{name}' did not take the replayed conversation within "
            f"{REPLAY_TIMEOUT_S:g} s"
        ) from None
