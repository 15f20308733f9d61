"""Items the server itself adds to the conversation for tools it runs, and the rules for a
client's ``mcp_approval_response``.

Server tools never appear in a response's output: the client must not execute them (an
Agents SDK client would try to run any completed ``function_call`` output item). The call,
its output and any approval request join the conversation as ``conversation.item.added`` /
``conversation.item.done``, so interfaces can show them and the model sees them next turn.
"""

from __future__ import annotations

from typing import TypeGuard

from .commands import Command, ToolApproval
from .conversation import Conversation
from .errors import ProtocolError
from .events import ConversationItemAdded, ConversationItemDone, ServerEvent
from .items import Item, McpApprovalRequest, McpApprovalResponse, to_wire


def add_items(conversation: Conversation, items: list[Item]) -> list[ServerEvent | Command]:
    """Append server-made items (with their ids and status) and say so."""
    out: list[ServerEvent | Command] = []
    for item in items:
        out += add_item(conversation, item)
    return out


def add_item(conversation: Conversation, item: Item) -> list[ServerEvent]:
    """Append a server-made item (it has its id and status) and say so."""
    previous = conversation.insert(item)
    wire = to_wire(item)
    return [
        ConversationItemAdded(item=wire, previous_item_id=previous),
        ConversationItemDone(item=wire, previous_item_id=previous),
    ]


def is_approval(item: Item) -> TypeGuard[McpApprovalResponse]:
    return isinstance(item, McpApprovalResponse)


def check_approval(conversation: Conversation, item: McpApprovalResponse) -> ToolApproval:
    """The command for a client's approval response; refuses one that answers no request,
    or a request that was answered already."""
    request = next(
        (
            i
            for i in conversation
            if isinstance(i, McpApprovalRequest) and i.id == item.approval_request_id
        ),
        None,
    )
    if request is None:
        raise ProtocolError(
            f"No approval request with id '{item.approval_request_id}' in the conversation.",
            code="item_not_found",
            param="item.approval_request_id",
        )
    if any(
        isinstance(i, McpApprovalResponse) and i.approval_request_id == request.id
        for i in conversation
    ):
        raise ProtocolError(
            f"The approval request '{request.id}' was answered already; an approval is given once.",
            code="approval_already_answered",
            param="item.approval_request_id",
        )
    return ToolApproval(
        item_id=item.id or "",
        approval_request_id=request.id or "",
        approve=item.approve,
        reason=item.reason,
    )
