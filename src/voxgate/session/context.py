"""From a response plan to a language-model request: conversation items become chat messages."""

from __future__ import annotations

from typing import Any

from ..engines.base import ChatMessage, ChatRequest, ToolSpec
from ..engines.tokens import count_tokens
from ..protocol.commands import ResponsePlan
from ..protocol.items import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputImage,
    InputText,
    Item,
    McpApprovalResponse,
    SystemMessage,
    UserMessage,
    item_text,
)
from ..protocol.mcp import RESERVED_LABEL
from ..protocol.mcp_items import McpApprovalRequest, McpCall
from . import truncation

# What the model sees for user audio nobody could transcribe; better than an empty turn.
UNTRANSCRIBED = "(the user spoke, but no transcript of the audio is available)"
# What the model reads for an MCP call that is waiting for, or was refused, approval.
AWAITING_APPROVAL = "Not run yet: waiting for the user to approve this call."
DECLINED = "Not run: the user declined this call."


def chat_request(plan: ResponsePlan, context_tokens: int | None = None) -> ChatRequest:
    """The request for ``plan``; its context trimmed to ``context_tokens`` (the model's
    window) by the plan's truncation policy (truncation.py), which may raise ContextTooLong."""
    items = truncation.fit(
        plan.context,
        truncation=plan.truncation,
        window=context_tokens,
        fixed=truncation.fixed_tokens(plan.instructions, plan.tools, count_tokens),
        max_output_tokens=plan.max_output_tokens,
        count=count_tokens,
    )
    return ChatRequest(
        instructions=plan.instructions,
        messages=chat_messages(
            items, {(f.server.label, f.tool.name): name for name, f in plan.mcp.items()}
        ),
        tools=[_tool(t) for t in plan.tools],
        tool_choice=_tool_choice(plan.tool_choice),
        max_output_tokens=plan.max_output_tokens,
        parallel_tool_calls=plan.parallel_tool_calls,
        reasoning_effort=plan.reasoning_effort,
    )


def chat_messages(
    items: list[Item], mcp_names: dict[tuple[str, str], str] | None = None
) -> list[ChatMessage]:
    """``mcp_names``: the function name the model knows each MCP tool by (server label,
    tool name); MCP calls and approvals read as that function's calls and results."""
    messages: list[ChatMessage] = []
    answers = {i.approval_request_id: i for i in items if isinstance(i, McpApprovalResponse)}
    for item in items:
        if isinstance(item, FunctionCall):
            _tool_call(messages, item.call_id or item.id or "", item.name, item.arguments)
        elif (
            isinstance(item, (McpCall, McpApprovalRequest)) and item.server_label != RESERVED_LABEL
        ):
            answer = answers.get(item.id or "")
            if isinstance(item, McpApprovalRequest) and answer is not None and answer.approve:
                continue  # the approved call's own mcp_call item tells what happened
            key = (item.server_label, item.name)
            name = (mcp_names or {}).get(key, f"{item.server_label}__{item.name}")
            _tool_call(messages, item.id or "", name, item.arguments)
            messages.append(
                {"role": "tool", "tool_call_id": item.id, "content": _mcp_result(item, answer)}
            )
        elif isinstance(item, FunctionCallOutput):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        elif isinstance(item, SystemMessage):
            messages.append({"role": "system", "content": item_text(item)})
        elif isinstance(item, UserMessage):
            messages.append({"role": "user", "content": _user_content(item)})
        elif isinstance(item, AssistantMessage):
            messages.append({"role": "assistant", "content": item_text(item)})
        elif isinstance(item, McpApprovalResponse) and not item.approve:
            # The model must know the action it asked about did not happen.
            note = (
                f"The action awaiting confirmation ({item.approval_request_id}) was not "
                f"approved ({item.reason or 'declined'}) and was not run."
            )
            messages.append({"role": "system", "content": note})
    return messages


def _tool_call(messages: list[ChatMessage], call_id: str, name: str, arguments: str) -> None:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments or "{}"},
    }
    last = messages[-1] if messages else None
    # Chat Completions wants a turn's tool calls on the assistant message before them.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _mcp_result(item: McpCall | McpApprovalRequest, answer: McpApprovalResponse | None) -> str:
    if isinstance(item, McpApprovalRequest):
        return AWAITING_APPROVAL if answer is None else DECLINED
    if item.error is not None:
        return f"Error ({item.error.type}): {item.error.message}"
    return item.output or ""


def _user_content(item: UserMessage) -> str | list[dict[str, Any]]:
    """Words as one string; with images, the Chat Completions content-part list (text and
    ``image_url`` parts, in the item's order)."""
    parts: list[dict[str, Any]] = []
    for part in item.content:
        if isinstance(part, InputText):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, InputAudio):
            parts.append({"type": "text", "text": part.transcript or UNTRANSCRIBED})
        elif isinstance(part, InputImage):
            image = {"url": part.image_url, "detail": part.detail or "auto"}
            parts.append({"type": "image_url", "image_url": image})
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return " ".join(p["text"] for p in parts)


def _tool(spec: dict[str, Any]) -> ToolSpec:
    return ToolSpec(
        name=spec["name"],
        description=spec.get("description") or "",
        parameters=spec.get("parameters") or {"type": "object", "properties": {}},
    )


def _tool_choice(choice: str | dict[str, Any]) -> str:
    if isinstance(choice, str):
        return choice
    return str(choice.get("name") or "auto")
