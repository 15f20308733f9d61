"""Confirmations inside a session on virtual time, with scripted engines: silence past the
expiry, and a barge-in that cuts the read-back while the server still plays it (WebRTC and
phones: the reply is done generating, the user is still hearing it)."""

from __future__ import annotations

from typing import Any

import _tool_targets
from voxgate.control.audit import AuditRecord
from voxgate.control.tools import ToolSpec
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script, tool_call_script
from voxgate.session.clock import SystemClock
from voxgate.session.engines import EngineSet
from voxgate.session.testing import running_session
from voxgate.session.tool_exec import ToolRegistry
from voxgate.session.tool_flow import SessionTools
from voxgate.session.tools import ToolBroker
from voxgate.session.transport import PlayoutCut

CALL = tool_call_script("forget_order", {"order_id": "A17"})
READBACK = text_script("Forget order A17? Shall I go ahead?")


class Audit:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, rec: AuditRecord) -> None:
        self.records.append(rec)


class Playout:
    """A server-side playout that never finishes playing: whatever it got is still playing."""

    def __init__(self) -> None:
        self.playing: dict[str, str] = {}  # response id → item id

    def bind(self, stopped: Any) -> None:
        pass

    def play(self, response_id: str, item_id: str, content_index: int, pcm24k: bytes) -> None:
        self.playing[response_id] = item_id

    def end(self, response_id: str) -> None:
        pass

    def clear(self, response_id: str | None) -> PlayoutCut | None:
        if not self.playing:
            return None
        rid, item_id = self.playing.popitem()
        return PlayoutCut(rid, item_id, 0, 100)


def tools(audit: Audit) -> SessionTools:
    spec = ToolSpec(
        name="forget_order",
        kind="python",
        target="_tool_targets:lookup_order",
        effect="destructive",
        parameters={"type": "object", "properties": {"order_id": {"type": "string"}}},
    )
    return SessionTools(ToolBroker(ToolRegistry([spec]), None, "sess_t", SystemClock(), audit))


def ask(running: Any) -> None:
    text = {"type": "input_text", "text": "Forget order A17."}
    running.transport.send_event(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [text]},
        }
    )
    running.transport.send_event({"type": "response.create"})


def approvals(events: list[Any]) -> list[dict[str, Any]]:
    return [
        e["item"]
        for e in events
        if e["type"] == "conversation.item.added" and e["item"]["type"] == "mcp_approval_response"
    ]


async def test_silence_past_the_expiry_cancels_the_action() -> None:
    audit, runs = Audit(), len(_tool_targets.calls)
    engines = EngineSet(llm=ScriptedLLM([CALL, READBACK]), tts=ScriptedTTS())
    async with running_session(engines, tools=tools(audit)) as running:
        ask(running)
        await running.transport.events_until("response.done")
        await running.transport.events_until("response.done")  # the read-back
        await running.clock.advance(59)
        assert [r.code for r in audit.records] == ["awaiting_confirmation"]
        await running.clock.advance(2)
        seen = await running.transport.events_until(
            lambda e: (
                e["type"] == "conversation.item.added"
                and e["item"]["type"] == "mcp_approval_response"
            )
        )
    [answer] = approvals(seen)
    assert (answer["approve"], answer["reason"]) == (False, "expired")
    assert [r.code for r in audit.records] == ["awaiting_confirmation", "expired"]
    assert len(_tool_targets.calls) == runs


async def test_barge_in_into_the_played_read_back_cancels_the_action() -> None:
    audit, playout, runs = Audit(), Playout(), len(_tool_targets.calls)
    engines = EngineSet(llm=ScriptedLLM([CALL, READBACK]), tts=ScriptedTTS())
    async with running_session(engines, tools=tools(audit), playout=playout) as running:
        ask(running)
        await running.transport.events_until("response.done")
        await running.transport.events_until("response.done")  # generated, still playing
        running.transport.send_event({"type": "output_audio_buffer.clear"})
        seen = await running.transport.events_until(
            lambda e: (
                e["type"] == "conversation.item.added"
                and e["item"]["type"] == "mcp_approval_response"
            )
        )
    assert "output_audio_buffer.cleared" in [e["type"] for e in seen]
    [answer] = approvals(seen)
    assert (answer["approve"], answer["reason"]) == (False, "interrupted")
    assert [r.code for r in audit.records] == ["awaiting_confirmation", "interrupted"]
    assert len(_tool_targets.calls) == runs
