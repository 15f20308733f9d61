"""What a relayed session says itself, with the session's embedded engines: the disclosure
(``disclosure.py``). An upstream model asked to "say" a sentence may paraphrase it; this
speaks exactly the words.

- The response runs here as in the embedded pipeline (a `ResponseRunner` whose language model
  is `SpokenText`), on the session's connection: its events are voxgate's own —
  ``response.created`` … ``response.done`` — in the session's output format, and where the
  server plays the audio (WebRTC, phone) it plays on the call's track like any reply.
- While it is generated, upstream events wait: the relay's reader pauses (`quiet`), and the
  few it had read already are kept in order (`defer`) and relayed right after it. So no
  upstream response reaches the client before it.
- Once it is done, the upstream is told what was said: a ``conversation.item.create`` of an
  assistant message with the same item id and the words as ``output_text``, so the model's
  context has it (and a failover or renewal carries it). The upstream's answers to that
  (the item ``added``/``done``, or an ``error``) are not relayed (`echo`): the client has the
  item already.
- Its usage row is the embedded engines' (model `failover.LOCAL_MODEL`), not priced as the
  upstream's model.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

from ..protocol import events as ev
from ..protocol.commands import ResponseFinished, ResponsePlan
from ..protocol.connection import RealtimeConnection
from ..protocol.ids import new_id
from .disclosure import SpokenText
from .driver import DriverHost, DriverOutput
from .failover import LOCAL_MODEL
from .response import ResponseRunner

log = logging.getLogger(__name__)
Send = Callable[[RealtimeConnection, dict[str, Any]], list[DriverOutput]]
Relay = Callable[[RealtimeConnection, str, dict[str, Any]], Sequence[DriverOutput]]
_ECHOES = {"conversation.item.added", "conversation.item.done", "conversation.item.created"}


class LocalSpeech:
    """The responses one relay driver speaks itself (see the module docstring). ``send``
    sends a client event upstream; ``relay`` relays an upstream event (both the driver's)."""

    def __init__(self, send: Send, relay: Relay) -> None:
        self._send = send
        self._relay = relay
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._quiet = asyncio.Event()
        self._quiet.set()
        # Upstream events read while a response is generated here. Bounded: the reader
        # waits for `quiet` before it hands over another.
        self._deferred: deque[tuple[str, dict[str, Any]]] = deque()
        # Responses said here (their playout is voxgate's alone: the upstream has only their
        # words), their items, and the event ids of the creates that told the upstream.
        self._responses: set[str] = set()
        self._items: set[str] = set()
        self._told: set[str] = set()

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def said(self, response_id: str) -> bool:
        """The response is one said here."""
        return response_id in self._responses

    async def quiet(self) -> None:
        """Wait while a response is generated here (the relay's reader pauses)."""
        await self._quiet.wait()

    def defer(self, text: str, data: dict[str, Any]) -> bool:
        """Keep an upstream event until the response generated here is done (True)."""
        if not self._tasks:
            return False
        self._deferred.append((text, data))
        return True

    def echo(self, data: dict[str, Any]) -> bool:
        """The upstream's answer to being told what was said: not the client's."""
        kind = data.get("type")
        if kind in _ECHOES:
            item = data.get("item")
            return isinstance(item, dict) and item.get("id") in self._items
        error = data.get("error")
        if kind == "error" and isinstance(error, dict) and error.get("event_id") in self._told:
            log.warning("the upstream refused what voxgate said (%s)", error.get("code"))
            return True
        return False

    def start(
        self, conn: RealtimeConnection, host: DriverHost, plan: ResponsePlan
    ) -> list[DriverOutput]:
        """Speak ``plan`` (the connection has started it) with the embedded engines."""
        rid = plan.response_id
        if host.engines is None:
            log.error("session %s has no embedded engines to speak with", conn.session_id)
            failure = {"type": "server_error", "code": "engine_unavailable"}
            return [*conn.finish_response(rid, "failed", {"type": "failed", "error": failure})]
        engines = replace(host.engines, llm=SpokenText())

        async def post(progress: Callable[[RealtimeConnection], Sequence[Any]]) -> None:
            def step(c: RealtimeConnection) -> list[DriverOutput]:
                out = [_local(o) for o in progress(c)]
                if rid in c.responses or self._tasks.pop(rid, None) is None:
                    return out
                return out + self._finished(c, out)

            await host.post(step)

        runner = ResponseRunner(
            plan,
            engines,
            post,
            host.media_space,
            lead_s=host.limits.audio_lead_s,
            clock=host.clock,
            max_speech_chars=host.limits.max_speech_chars,
        )
        self._tasks[rid] = host.spawn(runner.run(), f"said:{rid}")
        self._responses.add(rid)
        self._quiet.clear()
        return []

    def stop(
        self,
        conn: RealtimeConnection,
        details: dict[str, Any],
        status: Literal["cancelled", "failed"] = "cancelled",
    ) -> list[DriverOutput]:
        """End what is being said now (``status`` with ``details``); upstream events kept
        back are dropped with it (the relay is closing or lost)."""
        out: list[DriverOutput] = []
        for rid, task in list(self._tasks.items()):
            task.cancel()
            out += conn.finish_response(rid, status, details)
        self._tasks.clear()
        self._deferred.clear()
        self._quiet.set()
        return out

    def _finished(self, conn: RealtimeConnection, out: list[DriverOutput]) -> list[DriverOutput]:
        told: list[DriverOutput] = []
        for event in out:
            if not isinstance(event, ev.ResponseLifecycle) or event.type != "response.done":
                continue
            if event.response.get("status") == "completed":
                for item in event.response.get("output") or []:
                    told += self._tell(conn, item)
        if self._tasks:
            return told
        self._quiet.set()
        while self._deferred:
            text, data = self._deferred.popleft()
            told += self._relay(conn, text, data)
        return told

    def _tell(self, conn: RealtimeConnection, item: dict[str, Any]) -> list[DriverOutput]:
        words = " ".join(
            str(part.get("transcript") or part.get("text") or "")
            for part in item.get("content") or []
        ).strip()
        if item.get("type") != "message" or not words:
            return []
        event_id = new_id("event")
        self._items.add(str(item["id"]))
        self._told.add(event_id)
        said = {
            "id": item["id"],
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": words}],
        }
        return self._send(
            conn, {"type": "conversation.item.create", "event_id": event_id, "item": said}
        )


def _local(output: Any) -> Any:
    """Said with the embedded engines: its usage is theirs, not the upstream model's."""
    return replace(output, model=LOCAL_MODEL) if isinstance(output, ResponseFinished) else output
