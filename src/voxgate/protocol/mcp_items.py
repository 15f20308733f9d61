"""MCP conversation items and server events, in the shapes of the hosted API
(``realtime_mcp_*`` items, ``mcp_list_tools.*`` and ``response.mcp_call*`` events).

Clients may create only ``mcp_approval_response`` items (their answer to an approval
request); the other three are made by the server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .events import ServerEvent


class _McpItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=64)
    object: Literal["realtime.item"] | None = None
    # Hosted MCP items have no status; it is kept here only so code that closes items can
    # treat every item alike, and never put on the wire.
    status: Literal["completed", "incomplete", "in_progress"] | None = Field(None, exclude=True)


class McpListedTool(BaseModel):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    annotations: dict[str, Any] | None = None


class McpListTools(_McpItem):
    type: Literal["mcp_list_tools"] = "mcp_list_tools"
    server_label: str
    tools: list[McpListedTool] = Field(default_factory=list)


class McpToolError(BaseModel):
    """One of the SDK's three MCP error shapes (protocol, tool execution, HTTP)."""

    type: Literal["protocol_error", "tool_execution_error", "http_error"]
    message: str
    code: int | None = None


class McpCall(_McpItem):
    type: Literal["mcp_call"] = "mcp_call"
    server_label: str
    name: str
    arguments: str = ""
    approval_request_id: str | None = None
    output: str | None = None
    error: McpToolError | None = None


class McpApprovalRequest(_McpItem):
    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    server_label: str
    name: str
    arguments: str


class McpApprovalResponse(_McpItem):
    type: Literal["mcp_approval_response"] = "mcp_approval_response"
    approval_request_id: str
    approve: bool
    reason: str | None = None


McpItem = McpListTools | McpCall | McpApprovalRequest | McpApprovalResponse


class McpListToolsEvent(ServerEvent):
    type: Literal["mcp_list_tools.in_progress", "mcp_list_tools.completed", "mcp_list_tools.failed"]
    item_id: str


class McpCallArgumentsDelta(ServerEvent):
    type: Literal["response.mcp_call_arguments.delta"] = "response.mcp_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    delta: str
    # agents-js's schema requires it to be a string (PROTOCOL.md): always present.
    obfuscation: str = ""


class McpCallArgumentsDone(ServerEvent):
    type: Literal["response.mcp_call_arguments.done"] = "response.mcp_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    arguments: str


class McpCallStatus(ServerEvent):
    type: Literal[
        "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed"
    ]
    item_id: str
    output_index: int
