"""How MCP servers change a connection, sans-IO: tool listings as ``mcp_list_tools`` items,
approvals, and the ``mcp_call`` / ``mcp_approval_request`` items of a response.

Listing order (the hosted API's): ``mcp_list_tools.in_progress``, ``conversation.item.added``
(no tools yet), then ``mcp_list_tools.completed`` and ``conversation.item.done`` with the
tools offered — or ``mcp_list_tools.failed`` and an ``error`` saying why.
A call: ``response.output_item.added`` (``mcp_call``), ``response.mcp_call_arguments.delta``
… ``.done``, ``response.mcp_call.in_progress``, then ``.completed`` or ``.failed`` and
``response.output_item.done`` with the ``output`` or ``error``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from . import events as ev
from .commands import ResponsePlan
from .errors import ProtocolError
from .ids import new_id
from .items import Item, to_wire
from .mcp import RESERVED_LABEL, ApprovedCall, Listing, ListMcpTools, McpFunction
from .mcp_items import (
    McpApprovalRequest,
    McpApprovalResponse,
    McpCall,
    McpCallArgumentsDelta,
    McpCallArgumentsDone,
    McpCallStatus,
    McpListedTool,
    McpListTools,
    McpListToolsEvent,
    McpToolError,
)
from .responses import ResponseState
from .tool_items import add_items

if TYPE_CHECKING:
    from .connection import Output, RealtimeConnection


# -- listings -------------------------------------------------------------------------------


def sync(conn: RealtimeConnection) -> list[Output]:
    """List the tools of servers that are new or changed; forget removed ones."""
    state = conn.mcp
    wanted = {s.label: s for s in state.servers(conn.config.tools)}
    for label in [label for label in state.listings if label not in wanted]:
        del state.listings[label]
    out: list[Output] = []
    for label, server in wanted.items():
        listing = state.listings.get(label)
        if listing is not None and listing.server == server:
            continue
        item = McpListTools(id=new_id("item"), server_label=label, tools=[])
        state.listings[label] = Listing(server, item.id or "")
        previous = conn.conversation.insert(item)
        out += [
            McpListToolsEvent(type="mcp_list_tools.in_progress", item_id=item.id or ""),
            ev.ConversationItemAdded(item=to_wire(item), previous_item_id=previous),
            ListMcpTools(item.id or "", server),
        ]
    return out


def _listing(conn: RealtimeConnection, item_id: str) -> Listing | None:
    return next((x for x in conn.mcp.listings.values() if x.item_id == item_id), None)


def tools_listed(
    conn: RealtimeConnection, item_id: str, tools: list[McpListedTool]
) -> list[Output]:
    listing = _listing(conn, item_id)
    if listing is None:
        return []  # the entry was removed or changed meanwhile
    label, allow = listing.server.label, conn.mcp.allow_tool
    offered = [t for t in tools if listing.server.allows(t) and allow(label, t.name)]
    listing.tools = offered
    listing.hidden = [t for t in tools if t not in offered]
    out: list[Output] = [McpListToolsEvent(type="mcp_list_tools.completed", item_id=item_id)]
    return out + _item_done(conn, item_id, offered)


def listing_failed(conn: RealtimeConnection, item_id: str, message: str) -> list[Output]:
    listing = _listing(conn, item_id)
    if listing is None:
        return []
    listing.tools = []
    error = ProtocolError(
        f"Could not list the tools of MCP server '{listing.server.label}' "
        f"({listing.server.url}): {message}",
        code="mcp_list_tools_failed",
        param="session.tools",
        type="server_error",
    )
    out: list[Output] = [
        McpListToolsEvent(type="mcp_list_tools.failed", item_id=item_id),
        conn.error(error),
    ]
    return out + _item_done(conn, item_id, [])


def _item_done(conn: RealtimeConnection, item_id: str, tools: list[McpListedTool]) -> list[Output]:
    if item_id not in conn.conversation:
        return []
    item = conn.conversation.get(item_id)
    assert isinstance(item, McpListTools)
    item.tools = tools
    previous = conn.conversation.previous_of(item_id)
    return [ev.ConversationItemDone(item=to_wire(item), previous_item_id=previous)]


# -- approvals ------------------------------------------------------------------------------


def check_client_item(conn: RealtimeConnection, item: Item) -> None:
    """An approval answers a request once, even if the first answer was deleted since
    (that a request exists and has no answer in the conversation is checked by
    ``tool_items.check_approval``), and never a request that lapsed."""
    if not isinstance(item, McpApprovalResponse):
        return
    if (lapsed := conn.mcp.lapsed.get(item.approval_request_id)) is not None:
        raise _too_late(item.approval_request_id, *lapsed)
    if item.approval_request_id in conn.mcp.answered:
        raise ProtocolError(
            f"The approval request '{item.approval_request_id}' was answered already; an "
            "approval is given once.",
            code="approval_already_answered",
            param="item.approval_request_id",
        )


def lapse(conn: RealtimeConnection, request_id: str, code: str, why: str) -> list[Output]:
    """A request left unanswered is cancelled (``code`` ``approval_expired`` or
    ``approval_cancelled``, ``why`` for the client): a server-made ``mcp_approval_response``
    (approve false, reason ``expired`` / ``interrupted``) shows how it ended, and a later
    answer is refused. Nothing when it was answered meanwhile."""
    answered = any(
        isinstance(i, McpApprovalResponse) and i.approval_request_id == request_id
        for i in conn.conversation
    )
    if answered or request_id in conn.mcp.answered or request_id not in conn.conversation:
        return []
    conn.mcp.answered.add(request_id)
    conn.mcp.lapsed[request_id] = (code, why)
    reason = "expired" if code == "approval_expired" else "interrupted"
    answer = McpApprovalResponse(
        id=new_id("item"), approval_request_id=request_id, approve=False, reason=reason
    )
    return add_items(conn.conversation, [answer])


def answered_late(conn: RealtimeConnection, request_id: str, why: str) -> list[Output]:
    """The client's answer came after the request's expiry (before voxgate had cancelled
    it): it is in the conversation, but nothing runs, and the client is told."""
    conn.mcp.answered.add(request_id)
    conn.mcp.lapsed[request_id] = ("approval_expired", why)
    return [conn.error(_too_late(request_id, "approval_expired", why))]


def _too_late(request_id: str, code: str, why: str) -> ProtocolError:
    return ProtocolError(
        f"The approval request '{request_id}' can no longer be answered: {why}. The call "
        "was cancelled and will not run; ask for it again if it is still wanted.",
        code=code,
        param="item.approval_request_id",
    )


def with_mcp(conn: RealtimeConnection, plan: ResponsePlan) -> ResponsePlan:
    """The plan with the listed MCP tools offered as functions, and the approved calls to
    run first (each taken once: a later response will not run it again)."""
    reserved = {str(t.get("name")) for t in plan.tools}
    functions = conn.mcp.functions(reserved)
    offered = [fn.spec(name) for name, fn in functions.items() if fn.allowed]
    # Only requests the server made count: a client cannot approve a call it wrote itself.
    # The server's own tools ([[tools]]) settle their approvals themselves (tool_flow.py).
    requests = {
        i.id: i
        for i in conn.conversation
        if isinstance(i, McpApprovalRequest) and i.server_label != RESERVED_LABEL
    }
    approved: list[ApprovedCall] = []
    for item in plan.context:
        if not isinstance(item, McpApprovalResponse):
            continue
        request = requests.get(item.approval_request_id)
        if request is None or item.approval_request_id in conn.mcp.answered:
            continue
        conn.mcp.answered.add(item.approval_request_id)
        approved.append(
            ApprovedCall(
                request.id or "",
                request.server_label,
                request.name,
                request.arguments,
                item.approve,
                item.reason,
            )
        )
    tools, choice = _mcp_choice(plan.tool_choice, plan.tools + offered, functions)
    if not functions and not approved:
        return plan
    return dataclasses.replace(
        plan, tools=tools, tool_choice=choice, mcp=functions, approved=tuple(approved)
    )


def _mcp_choice(
    choice: str | dict[str, Any], tools: list[dict[str, Any]], functions: dict[str, McpFunction]
) -> tuple[list[dict[str, Any]], str | dict[str, Any]]:
    """``tool_choice`` ``{"type": "mcp", "server_label", "name"?}`` as the model takes it:
    that tool's function, or (no name) only that server's tools, one of which it must call."""
    if not isinstance(choice, dict) or choice.get("type") != "mcp":
        return tools, choice
    label, name = choice.get("server_label"), choice.get("name")
    mine = {
        fn_name: fn
        for fn_name, fn in functions.items()
        if fn.allowed and fn.server.label == label and (name is None or fn.tool.name == name)
    }
    if not mine:
        what = f"the tool '{name}' of MCP server '{label}'" if name else f"MCP server '{label}'"
        raise ProtocolError(
            f"tool_choice names {what}, which offers no such tool (not listed yet, not "
            "allowed, or not in session.tools).",
            param="tool_choice",
        )
    if name is not None:
        return tools, {"type": "function", "name": next(iter(mine))}
    return [fn.spec(fn_name) for fn_name, fn in mine.items()], "required"


# -- calls in a response --------------------------------------------------------------------


def _state(conn: RealtimeConnection, rid: str) -> ResponseState | None:
    return conn.responses.get(rid)


def open_call(
    conn: RealtimeConnection,
    rid: str,
    item_id: str,
    server_label: str,
    name: str,
    approval_request_id: str | None = None,
) -> list[Output]:
    state = _state(conn, rid)
    if state is None:
        return []
    out: list[Output] = [*state.close_message()]
    item = McpCall(
        id=item_id,
        server_label=server_label,
        name=name,
        approval_request_id=approval_request_id,
    )
    out += state._add_item(item)
    state.mcp_calls[item_id] = (item, len(state.output) - 1)
    return out


def call_arguments(conn: RealtimeConnection, rid: str, item_id: str, delta: str) -> list[Output]:
    state = _state(conn, rid)
    if state is None or item_id not in state.mcp_calls:
        return []
    item, index = state.mcp_calls[item_id]
    item.arguments += delta
    state.text_out.append(delta)
    return [
        McpCallArgumentsDelta(response_id=rid, item_id=item_id, output_index=index, delta=delta)
    ]


def call_arguments_done(conn: RealtimeConnection, rid: str, item_id: str) -> list[Output]:
    state = _state(conn, rid)
    if state is None or item_id not in state.mcp_calls:
        return []
    item, index = state.mcp_calls[item_id]
    return [
        McpCallArgumentsDone(
            response_id=rid, item_id=item_id, output_index=index, arguments=item.arguments
        )
    ]


def call_running(conn: RealtimeConnection, rid: str, item_id: str) -> list[Output]:
    state = _state(conn, rid)
    if state is None or item_id not in state.mcp_calls:
        return []
    index = state.mcp_calls[item_id][1]
    return [
        McpCallStatus(type="response.mcp_call.in_progress", item_id=item_id, output_index=index)
    ]


def call_finished(
    conn: RealtimeConnection,
    rid: str,
    item_id: str,
    output: str | None,
    error: McpToolError | None,
) -> list[Output]:
    """The call's result: ``.completed`` with its output, or ``.failed`` with its error."""
    state = _state(conn, rid)
    if state is None or item_id not in state.mcp_calls:
        return []
    return close_call(state, item_id, output, error)


def close_call(
    state: ResponseState, item_id: str, output: str | None, error: McpToolError | None
) -> list[Output]:
    item, index = state.mcp_calls.pop(item_id)
    item.output, item.error = output, error
    kind = "response.mcp_call.failed" if error is not None else "response.mcp_call.completed"
    out: list[Output] = [McpCallStatus(type=kind, item_id=item_id, output_index=index)]
    return out + state._item_done(item, index)


def approval_request(
    conn: RealtimeConnection, rid: str, request: McpApprovalRequest
) -> list[Output]:
    """The model's call needs the user's approval: an ``mcp_approval_request`` item in the
    output instead of a call (its arguments are fixed from now on)."""
    state = _state(conn, rid)
    if state is None:
        return []
    out: list[Output] = [*state.close_message()]
    out += state._add_item(request)
    return out + state._item_done(request, len(state.output) - 1)
