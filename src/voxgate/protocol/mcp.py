"""MCP servers in a session: the ``{"type": "mcp"}`` tool entry, which of a server's tools
are offered and which need approval, and the state of each server's tool listing.

Rules:
- a server is known by its ``server_label``; clients add servers in ``session.tools``, the
  operator configures others for every session (never shown in ``session.tools``: their
  headers may hold secrets);
- a server's tools are listed once per configuration (label, URL, headers, filters); a
  changed entry is listed again, a removed one is no longer offered;
- a tool is offered when the entry's ``allowed_tools`` and the policy both allow it;
- ``require_approval`` defaults to ``"always"``: nothing runs unapproved unless asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from .mcp_items import McpListedTool

_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The label of approval requests for the server's own tools ([[tools]]); no MCP server may
# take it.
RESERVED_LABEL = "voxgate"
# What Chat Completions accepts as a function name.
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Limits of one server's calls in one session, for a client's entry and, unless set, an
# operator's (docs/limits.md): enough for any conversation, few enough to stop a model
# looping on a tool or a session flooding a server.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_CALLS_PER_SESSION = 100
DEFAULT_MAX_CONCURRENT = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolFilter(_Strict):
    """Tools by name and/or by the server's ``readOnlyHint`` annotation."""

    tool_names: tuple[str, ...] | None = None
    read_only: bool | None = None

    def matches(self, tool: McpListedTool) -> bool:
        if self.tool_names is not None and tool.name in self.tool_names:
            return True
        if self.read_only is not None:
            hint = bool((tool.annotations or {}).get("readOnlyHint", False))
            return hint == self.read_only
        return False


class ApprovalFilter(_Strict):
    always: ToolFilter | None = None
    never: ToolFilter | None = None


AllowedTools = tuple[str, ...] | ToolFilter | None
RequireApproval = Literal["always", "never"] | ApprovalFilter | None


class McpToolEntry(_Strict):
    """A ``tools`` entry of type ``mcp`` (the SDK's ``RealtimeToolsConfigUnion`` Mcp)."""

    type: Literal["mcp"]
    server_label: str
    server_url: str | None = None
    server_description: str | None = None
    headers: dict[str, str] | None = None
    authorization: str | None = None
    allowed_tools: AllowedTools = None
    require_approval: RequireApproval = None
    allowed_callers: tuple[Literal["direct"], ...] | None = None
    # Hosted-only ways to reach a server: refused with a message naming the field.
    connector_id: None = None
    tunnel_id: None = None
    defer_loading: Literal[False] | None = None

    @field_validator("server_label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError("use 1-64 letters, digits, '_' or '-'")
        if value == RESERVED_LABEL:
            raise ValueError(f"'{RESERVED_LABEL}' is reserved for the server's own tools")
        return value

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (streamable HTTP)")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> McpToolEntry:
        if self.server_url is None:
            raise ValueError("'server_url' is required: voxgate connects to MCP servers by URL")
        return self

    def server(self) -> McpServer:
        headers = dict(self.headers or {})
        if self.authorization:
            headers["Authorization"] = f"Bearer {self.authorization}"
        return McpServer(
            label=self.server_label,
            url=self.server_url or "",
            headers=tuple(sorted(headers.items())),
            allowed_tools=self.allowed_tools,
            require_approval=self.require_approval,
            description=self.server_description,
        )


@dataclass(frozen=True, slots=True)
class McpServer:
    """A server a session may use, from a client's entry or the operator's settings."""

    label: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    allowed_tools: AllowedTools = None
    require_approval: RequireApproval = None
    operator: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Calls run in one session, and running at once in it; a call beyond either is refused.
    max_calls_per_session: int = DEFAULT_MAX_CALLS_PER_SESSION
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    # Argument names never written in clear to logs or the audit log.
    sensitive_args: tuple[str, ...] = ()
    # What the server is for: the model reads it with each of the server's tools.
    description: str | None = None

    def allows(self, tool: McpListedTool) -> bool:
        allowed = self.allowed_tools
        if allowed is None:
            return True
        if isinstance(allowed, ToolFilter):
            return allowed.matches(tool)
        return tool.name in allowed

    def needs_approval(self, tool: McpListedTool) -> bool:
        rule = self.require_approval
        if rule is None or rule == "always":
            return True
        if rule == "never":
            return False
        if rule.always is not None and rule.always.matches(tool):
            return True
        return not (rule.never is not None and rule.never.matches(tool))


@dataclass(frozen=True, slots=True)
class McpFunction:
    """An MCP tool as the language model sees it: a function, and where it really runs."""

    server: McpServer
    tool: McpListedTool
    # False for tools the server has but the entry or the policy does not allow: never
    # offered, and refused if the model calls them anyway.
    allowed: bool = True

    @property
    def approval(self) -> bool:
        return self.server.needs_approval(self.tool)

    @property
    def read_only(self) -> bool:
        """The server says the tool changes nothing (its ``readOnlyHint``)."""
        return bool((self.tool.annotations or {}).get("readOnlyHint", False))

    def spec(self, name: str) -> dict[str, Any]:
        about = self.tool.description or ""
        if self.server.description:
            about = f"{about} (from {self.server.label}: {self.server.description})".strip()
        return {
            "type": "function",
            "name": name,
            "description": about,
            "parameters": self.tool.input_schema or {"type": "object", "properties": {}},
        }


@dataclass(frozen=True, slots=True)
class ListMcpTools:
    """Command: connect to ``server`` and list its tools for the ``mcp_list_tools`` item."""

    item_id: str
    server: McpServer


@dataclass(frozen=True, slots=True)
class ApprovedCall:
    """The user's answer to an approval request, taken by the next response exactly once:
    approved, the call runs at its start with the arguments of the request; denied, nothing
    runs (the model reads that the user declined)."""

    request_id: str
    server_label: str
    name: str
    arguments: str
    approve: bool = True
    reason: str | None = None


@dataclass
class Listing:
    server: McpServer
    item_id: str
    # None while listing; the tools offered once listed.
    tools: list[McpListedTool] | None = None
    # Tools the server has that are not offered (refused if called).
    hidden: list[McpListedTool] = field(default_factory=list)


@dataclass
class McpState:
    """A connection's MCP servers and their listings."""

    operator: list[McpServer] = field(default_factory=list)
    listings: dict[str, Listing] = field(default_factory=dict)
    # Approval requests that have run (or been refused): one approval runs a call once.
    answered: set[str] = field(default_factory=set)
    # Requests cancelled unanswered (expired, or cut by a barge-in): the error code and the
    # reason a late answer is refused with.
    lapsed: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The policy's allowed_tools over MCP tool names (set by the server at admission).
    allow_tool: Callable[[str, str], bool] = lambda label, name: True

    def servers(self, tools: list[Any]) -> list[McpServer]:
        """The servers a session with these ``tools`` uses: the operator's, then the
        client's (a client entry cannot replace an operator server of the same label)."""
        out = list(self.operator)
        taken = {s.label for s in out}
        for tool in tools:
            if isinstance(tool, McpToolEntry) and tool.server_label not in taken:
                out.append(tool.server())
                taken.add(tool.server_label)
        return out

    def functions(self, reserved: set[str]) -> dict[str, McpFunction]:
        """Every listed tool by the function name the model sees: the tool's own name, or
        ``label__name`` where that is taken (another server, a client function)."""
        out: dict[str, McpFunction] = {}
        for listing in self.listings.values():
            for tool, allowed in _tools_of(listing):
                name = tool.name
                if name in reserved or name in out or not _FUNCTION_NAME.match(name):
                    name = f"{listing.server.label}__{tool.name}"[:64]
                out[name] = McpFunction(listing.server, tool, allowed)
        return out


def _tools_of(listing: Listing) -> list[tuple[McpListedTool, bool]]:
    return [(t, True) for t in listing.tools or []] + [(t, False) for t in listing.hidden]
