"""The MCP rules with no server at all: which tools an entry offers, which need approval,
and what an entry sends to its server."""

from __future__ import annotations

from typing import Any

import pytest

from voxgate.protocol.mcp import McpToolEntry
from voxgate.protocol.mcp_items import McpListedTool

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
