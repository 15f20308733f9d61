"""The MCP rules with no server at all: which tools an entry offers, which need approval,
and what an entry sends to its server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from _helpers_protocol import (
    effects,
    events,
    send,
    start_response,
    started,
    the_error,
    types,
    update,
)
from voxgate.protocol import mcp_flow
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.mcp import ListMcpTools, McpFunction, McpToolEntry
from voxgate.protocol.mcp_items import McpApprovalRequest, McpListedTool
from voxgate.session.mcp_redact import REDACTED, redact

READ = McpListedTool(name="lookup", input_schema={}, annotations={"readOnlyHint": True})
WRITE = McpListedTool(name="delete", input_schema={}, annotations={"destructiveHint": True})
PLAIN = McpListedTool(name="ping", input_schema={})


def entry(**fields: Any) -> McpToolEntry:
    base = {"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example.com/mcp"}
    return McpToolEntry.model_validate({**base, **fields})


def offered(**fields: Any) -> list[str]:
    server = entry(**fields).server()
    return [t.name for t in (READ, WRITE, PLAIN) if server.allows(t)]


def test_filters_by_name_and_read_only_hint() -> None:
    assert offered() == ["lookup", "delete", "ping"]
    assert offered(allowed_tools=["delete"]) == ["delete"]
    assert offered(allowed_tools={"tool_names": ["ping"]}) == ["ping"]
    assert offered(allowed_tools={"read_only": True}) == ["lookup"]
    assert offered(allowed_tools={"read_only": False}) == ["delete", "ping"]


def needing(rule: Any) -> list[str]:
    server = entry(require_approval=rule).server()
    return [t.name for t in (READ, WRITE, PLAIN) if server.needs_approval(t)]


def test_approval_rules() -> None:
    assert needing(None) == ["lookup", "delete", "ping"]  # unset: ask for everything
    assert needing("always") == ["lookup", "delete", "ping"]
    assert needing("never") == []
    assert needing({"never": {"read_only": True}}) == ["delete", "ping"]
    assert needing({"never": {"tool_names": ["ping"]}}) == ["lookup", "delete"]
    # "always" wins over "never" for a tool both name.
    rule = {"always": {"tool_names": ["lookup"]}, "never": {"read_only": True}}
    assert needing(rule) == ["lookup", "delete", "ping"]


def test_headers_and_authorization_reach_the_server() -> None:
    server = entry(headers={"X-Tenant": "acme"}, authorization="tok").server()
    assert dict(server.headers) == {"X-Tenant": "acme", "Authorization": "Bearer tok"}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"server_label": "has space"}, "letters, digits"),
        ({"server_url": "ftp://x"}, "http"),
        ({"server_url": None}, "server_url"),
    ],
)
def test_bad_entries_say_what_to_fix(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        entry(**fields)


# -- the connection, sans-IO: listings, plans, approvals, cut-short calls ------------------

URL = "https://mcp.example.com/mcp"
TOOLS = [
    McpListedTool(name="get_weather", input_schema={"type": "object"}),
    McpListedTool(name="delete_account", input_schema={"type": "object"}),
    McpListedTool(name="export", input_schema={"type": "object"}),
]


def with_server(conn: RealtimeConnection, **fields: Any) -> ListMcpTools:
    tool = {"type": "mcp", "server_label": "crm", "server_url": URL, **fields}
    out = update(conn, tools=[tool])
    assert types(events(out)) == [
        "session.updated",
        "mcp_list_tools.in_progress",
        "conversation.item.added",
    ]
    (command,) = effects(out)
    assert isinstance(command, ListMcpTools) and command.server.url == URL
    return command


def test_a_listing_offers_what_the_entry_and_the_policy_allow() -> None:
    conn = started()
    conn.mcp.allow_tool = lambda label, name: name != "delete_account"  # the policy
    command = with_server(conn, allowed_tools=["get_weather", "delete_account"])
    out = events(mcp_flow.tools_listed(conn, command.item_id, TOOLS))
    assert types(out) == ["mcp_list_tools.completed", "conversation.item.done"]
    assert [t["name"] for t in out[1]["item"]["tools"]] == ["get_weather"]
    plan = start_response(conn)
    assert [t["name"] for t in plan.tools] == ["get_weather"]
    # Known but not offered: refused if the model calls it anyway.
    assert not plan.mcp["delete_account"].allowed and not plan.mcp["export"].allowed
    # The same entry again is not listed again; a changed one is; a removed one is gone.
    assert types(events(update(conn, tools=conn.config.model_dump()["tools"]))) == [
        "session.updated"
    ]
    with_server(conn, allowed_tools=["export"])
    assert types(events(update(conn, tools=[]))) == ["session.updated"]
    assert conn.mcp.listings == {}


def test_a_listing_that_fails_says_why_and_offers_nothing() -> None:
    conn = started()
    command = with_server(conn)
    out = events(mcp_flow.listing_failed(conn, command.item_id, "answered HTTP 401"))
    assert types(out) == ["mcp_list_tools.failed", "error", "conversation.item.done"]
    assert "answered HTTP 401" in out[1]["error"]["message"]
    assert start_response(conn).tools == []


def test_clients_cannot_make_server_items_or_forge_approvals() -> None:
    conn = started()
    for kind in ("mcp_call", "mcp_list_tools", "mcp_approval_request"):
        item = {"type": kind, "server_label": "crm", "name": "x", "arguments": "{}"}
        assert the_error(send(conn, "conversation.item.create", item=item))["param"] == "item.type"
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_x", "approve": True}
    assert (
        the_error(send(conn, "conversation.item.create", item=answer))["code"] == "item_not_found"
    )


def test_an_approval_is_taken_by_one_response_only() -> None:
    conn = started()
    command = with_server(conn)
    mcp_flow.tools_listed(conn, command.item_id, TOOLS)
    plan = start_response(conn)
    request = McpApprovalRequest(
        id="mcpr_1", server_label="crm", name="delete_account", arguments='{"id": 4}'
    )
    out = events(mcp_flow.approval_request(conn, plan.response_id, request))
    assert [e["type"] for e in out][-2:] == ["response.output_item.done", "conversation.item.done"]
    conn.finish_response(plan.response_id)
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    send(conn, "conversation.item.create", item=answer)
    (approved,) = start_response(conn).approved
    assert (approved.name, approved.arguments, approved.approve) == (
        "delete_account",
        '{"id": 4}',
        True,
    )
    conn.finish_response(conn.active_response_id or "")
    assert start_response(conn).approved == ()


def test_a_call_cut_short_fails_with_its_response() -> None:
    conn = started()
    command = with_server(conn, require_approval="never")
    mcp_flow.tools_listed(conn, command.item_id, TOOLS)
    rid = start_response(conn).response_id
    mcp_flow.open_call(conn, rid, "item_call", "crm", "get_weather")
    mcp_flow.call_arguments(conn, rid, "item_call", '{"city": "Oslo"}')
    mcp_flow.call_running(conn, rid, "item_call")
    out = events(conn.cancel_response(rid, "turn_detected"))
    assert types(out)[:3] == [
        "response.mcp_call.failed",
        "response.output_item.done",
        "conversation.item.done",
    ]
    call = out[1]["item"]
    assert call["type"] == "mcp_call" and call["error"]["type"] == "tool_execution_error"
    assert out[-1]["response"]["status"] == "cancelled"


def test_secret_sounding_arguments_are_redacted_as_whole_words() -> None:
    raw = {
        "pin": "1234",
        "card_number": "4111",
        "apiKey": "k",
        "user_token": "t",
        "account_id": "42",
        "shipping": "fast",
        "keyboard": "qwerty",
    }
    shown = redact(json.dumps(raw), sensitive=("account_id",))
    assert shown == {
        "pin": REDACTED,
        "card_number": REDACTED,
        "apiKey": REDACTED,
        "user_token": REDACTED,
        "account_id": REDACTED,  # named by the operator's sensitive_args
        "shipping": "fast",
        "keyboard": "qwerty",
    }


def test_an_mcp_tool_choice_forces_that_server_or_tool() -> None:
    conn = started()
    command = with_server(conn, require_approval="never")
    mcp_flow.tools_listed(conn, command.item_id, TOOLS)
    named = {"type": "mcp", "server_label": "crm", "name": "get_weather"}
    plan = start_response(conn, tool_choice=named)
    assert plan.tool_choice == {"type": "function", "name": "get_weather"}
    conn.finish_response(plan.response_id)
    update(conn, tool_choice={"type": "mcp", "server_label": "crm"})
    plan = start_response(conn)  # the session's choice: only crm's tools, one must be called
    assert plan.tool_choice == "required"
    assert sorted(t["name"] for t in plan.tools) == ["delete_account", "export", "get_weather"]
    conn.finish_response(plan.response_id)
    unknown = {"type": "mcp", "server_label": "crm", "name": "launch"}
    error = the_error(send(conn, "response.create", response={"tool_choice": unknown}))
    assert error["param"] == "tool_choice" and "launch" in error["message"]


def test_the_model_reads_the_servers_description_with_each_tool() -> None:
    entry = McpToolEntry.model_validate(
        {
            "type": "mcp",
            "server_label": "crm",
            "server_url": "http://127.0.0.1:9/mcp",
            "server_description": "Customer records of Acme.",
        }
    )
    tool = McpListedTool(name="lookup", description="Find a customer.", input_schema={})
    spec = McpFunction(entry.server(), tool).spec("crm__lookup")
    assert spec["description"] == "Find a customer. (from crm: Customer records of Acme.)"
    bare = McpFunction(
        McpToolEntry.model_validate({**entry.model_dump(), "server_description": None}).server(),
        tool,
    )
    assert bare.spec("crm__lookup")["description"] == "Find a customer."
