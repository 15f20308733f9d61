"""Server tools below the wire: the approval items the protocol accepts, and the executor's
concurrency and timeout limits."""

from __future__ import annotations

import asyncio
import json

import _tool_targets
from _helpers_protocol import events, send, started, the_error
from voxgate.control.tools import ToolSpec
from voxgate.protocol.commands import ToolApproval
from voxgate.protocol.items import McpApprovalRequest
from voxgate.protocol.tool_items import add_item
from voxgate.session.tool_exec import Caller, ToolRegistry

CALLER = Caller("key_1", "acme", None, "sess_1")


def test_clients_answer_approval_requests_but_never_make_them() -> None:
    conn = started()
    made = the_error(
        send(
            conn,
            "conversation.item.create",
            item={
                "type": "mcp_approval_request",
                "name": "x",
                "arguments": "{}",
                "server_label": "s",
            },
        )
    )
    assert "made by the server" in made["message"] and made["param"] == "item.type"
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    unknown = the_error(send(conn, "conversation.item.create", item=answer))
    assert unknown["code"] == "item_not_found"
    request = McpApprovalRequest(
        id="mcpr_1",
        type="mcp_approval_request",
        name="delete_account",
        arguments='{"account_id":"42"}',
        server_label="voxgate",
    )
    shown = events(add_item(conn.conversation, request))  # validated against the SDK
    assert [e["item"]["type"] for e in shown] == ["mcp_approval_request"] * 2
    out = send(conn, "conversation.item.create", item=answer)
    assert [e["type"] for e in events(out)] == ["conversation.item.added", "conversation.item.done"]
    assert [o for o in out if isinstance(o, ToolApproval)] == [
        ToolApproval(out[0].item["id"], "mcpr_1", True, None)  # type: ignore[union-attr]
    ]
    again = the_error(send(conn, "conversation.item.create", item=answer))
    assert again["code"] == "approval_already_answered"


def python_tool(**fields: object) -> ToolSpec:
    return ToolSpec.model_validate(
        {"name": "held", "kind": "python", "target": "_tool_targets:held", **fields}
    )


async def test_per_tool_concurrency_and_timeout() -> None:
    _tool_targets.gate, _tool_targets.full = asyncio.Event(), asyncio.Event()
    _tool_targets.most_in_flight = 0
    spec = python_tool(max_concurrency=2, timeout_s=5)
    registry = ToolRegistry([spec])
    runs = [
        asyncio.create_task(registry.execute(spec, {"n": i}, CALLER, f"k{i}")) for i in range(4)
    ]
    await asyncio.wait_for(_tool_targets.full.wait(), 5)  # two start …
    for _ in range(20):  # … and however long the loop turns, the others wait for a slot
        await asyncio.sleep(0)
    assert _tool_targets.in_flight == 2
    _tool_targets.gate.set()
    results = await asyncio.gather(*runs)
    assert [json.loads(r.output) for r in results] == [0, 1, 2, 3]
    assert _tool_targets.most_in_flight == 2


async def test_a_tool_past_its_timeout_gives_the_model_an_error() -> None:
    _tool_targets.gate = asyncio.Event()  # never opened
    spec = python_tool(timeout_s=0.05)
    result = await ToolRegistry([spec]).execute(spec, {"n": 1}, CALLER, "k")
    assert result.status == "timeout"
    assert json.loads(result.output)["error"]["code"] == "tool_timeout"


async def test_a_huge_answer_is_cut_for_the_model() -> None:
    spec = ToolSpec.model_validate({"name": "big", "kind": "python", "target": "_tool_targets:big"})
    result = await ToolRegistry([spec]).execute(spec, {}, CALLER, "k")
    assert result.status == "ok" and len(result.output) < 64_100
    assert result.output.endswith("[cut: the tool answered 100000 characters]")


async def test_a_retried_write_runs_once() -> None:
    from voxgate.session.clock import SystemClock
    from voxgate.session.tools import Ready, ToolBroker

    spec = ToolSpec.model_validate(
        {
            "name": "note",
            "kind": "python",
            "target": "_tool_targets:lookup_order",
            "effect": "write",
            "confirm": False,
        }
    )
    broker = ToolBroker(ToolRegistry([spec]), None, "sess_1", SystemClock())
    ready = broker.check("note", "call_1", '{"order_id": "B2"}', "act_1")
    assert isinstance(ready, Ready)
    before = len(_tool_targets.calls)
    first, again = await broker.run(ready), await broker.run(ready)
    assert first == again and len(_tool_targets.calls) == before + 1
