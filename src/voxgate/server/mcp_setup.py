"""MCP for an admitted session: the operator's servers from settings, the policy's
allowed_tools over MCP tool names, and the audit of every call (kind "tool")."""

from __future__ import annotations

from typing import Any

from ..control.identity import Principal
from ..protocol.connection import RealtimeConnection
from ..protocol.mcp import McpServer
from ..session.session import Session
from ..settings import McpServerSetting, Settings
from .controls import Controls


def operator_servers(settings: Settings) -> list[McpServer]:
    return [_server(s) for s in settings.mcp_servers]


def _server(s: McpServerSetting) -> McpServer:
    return McpServer(
        label=s.server_label,
        url=s.server_url,
        headers=tuple(sorted(s.headers.items())),
        allowed_tools=tuple(s.allowed_tools) if s.allowed_tools is not None else None,
        require_approval=s.require_approval,
        operator=True,
        timeout_s=s.timeout_s,
        max_calls_per_session=s.max_calls_per_session,
        max_concurrent=s.max_concurrent,
        sensitive_args=tuple(s.sensitive_args),
    )


def prepare(connection: RealtimeConnection, settings: Settings, principal: Principal) -> None:
    """Before the session starts: its operator servers, and the policy's allowed_tools
    applied to MCP tools (by tool name, or as ``label.tool``)."""
    policy = principal.policy
    connection.mcp.operator = operator_servers(settings)
    connection.mcp.allow_tool = lambda label, name: (
        policy.allows("allowed_tools", name) or policy.allows("allowed_tools", f"{label}.{name}")
    )


def wire(session: Session, controls: Controls, principal: Principal) -> None:
    """Every MCP decision of the session goes to the audit log as kind "tool"."""
    session_id = session.id

    def audit(detail: dict[str, Any]) -> None:
        # The decision is the record's code, as for the server's own tools.
        controls.audit(
            "tool", principal, code=detail.get("decision"), session_id=session_id, **detail
        )

    session.mcp.audit = audit
