"""Conversation items: what clients may create, and how items look on the wire.

Items are kept as validated pydantic models. Audio bytes never live inside an item: the
conversation stores them beside it (see `conversation.py`), so events that must not carry
audio (added/done/response.done) cannot leak it by accident.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import ProtocolError, from_validation_error

# The approval items are also the server tools' (tool_items.py): re-exported here.
from .mcp_items import (
    McpApprovalRequest as McpApprovalRequest,
)
from .mcp_items import (
    McpApprovalResponse as McpApprovalResponse,
)
from .mcp_items import (
    McpCall,
    McpItem,
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Part):
    type: Literal["input_text"]
    text: str


class InputAudio(_Part):
    type: Literal["input_audio"]
    audio: str | None = None
    transcript: str | None = None


class InputImage(_Part):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] | None = None


class OutputText(_Part):
    type: Literal["output_text"]
    text: str


class OutputAudio(_Part):
    type: Literal["output_audio"]
    audio: str | None = None
    transcript: str | None = None
    format: Any | None = None


UserPart = Annotated[InputText | InputAudio | InputImage, Field(discriminator="type")]
AssistantPart = Annotated[OutputText | OutputAudio, Field(discriminator="type")]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=64)
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class SystemMessage(_Item):
    type: Literal["message"] = "message"
    role: Literal["system"]
    content: list[InputText]


class UserMessage(_Item):
    type: Literal["message"] = "message"
    role: Literal["user"]
    content: list[UserPart]


class AssistantMessage(_Item):
    type: Literal["message"] = "message"
    role: Literal["assistant"]
    content: list[AssistantPart]


class FunctionCall(_Item):
    type: Literal["function_call"]
    name: str
    arguments: str = ""
    call_id: str | None = None


class FunctionCallOutput(_Item):
    type: Literal["function_call_output"]
    call_id: str
    output: str


Message = Annotated[SystemMessage | UserMessage | AssistantMessage, Field(discriminator="role")]
Item = Message | FunctionCall | FunctionCallOutput | McpItem
# MCP items clients may not create: the server lists tools, calls them and asks approval.
_SERVER_MADE = ("mcp_list_tools", "mcp_call", "mcp_approval_request")


class ItemReference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["item_reference"]
    id: str


_MESSAGE = TypeAdapter(Message)


def parse_item(raw: Any, param: str = "item") -> Item:
    """A client-supplied item, validated; raises ProtocolError naming the bad field."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"'{param}' must be an object.", code="invalid_type", param=param)
    kind = raw.get("type", "message" if "role" in raw else None)
    try:
        if kind == "message":
            if "role" not in raw:
                raise ProtocolError(
                    f"Missing required parameter: '{param}.role'.",
                    code="missing_required_parameter",
                    param=f"{param}.role",
                )
            return _MESSAGE.validate_python({**raw, "type": "message"})
        if kind == "function_call":
            return FunctionCall.model_validate(raw)
        if kind == "function_call_output":
            return FunctionCallOutput.model_validate(raw)
        if kind == "mcp_approval_response":
            return McpApprovalResponse.model_validate(raw)
    except ValidationError as exc:
        raise from_validation_error(exc, param) from None
    if kind is None:
        raise ProtocolError(
            f"Missing required parameter: '{param}.type'.",
            code="missing_required_parameter",
            param=f"{param}.type",
        )
    if kind in _SERVER_MADE:
        raise ProtocolError(
            f"Items of type {kind!r} are made by the server; answer an approval request with "
            "an item of type 'mcp_approval_response' (approval_request_id, approve).",
            param=f"{param}.type",
        )
    raise ProtocolError(
        f"Invalid value: {kind!r}. Supported item types are 'message', 'function_call', "
        "'function_call_output' and 'mcp_approval_response'.",
        param=f"{param}.type",
    )


def to_wire(item: Item) -> dict[str, Any]:
    """The item as it appears in events (no audio bytes, no unset optional fields)."""
    body = item.model_dump(mode="json", exclude_none=True)
    if isinstance(item, (UserMessage, AssistantMessage)):
        # Clients expect the transcript key on audio parts even while it is unknown.
        for part, model in zip(body["content"], item.content, strict=True):
            if model.type in ("input_audio", "output_audio"):
                part.pop("audio", None)
                part.setdefault("transcript", None)
    return body


def item_text(item: Item) -> str:
    """The words of an item: text parts and audio transcripts, joined."""
    if isinstance(item, (SystemMessage, UserMessage, AssistantMessage)):
        words = []
        for part in item.content:
            if isinstance(part, (InputText, OutputText)):
                words.append(part.text)
            elif isinstance(part, (InputAudio, OutputAudio)) and part.transcript:
                words.append(part.transcript)
        return " ".join(words)
    if isinstance(item, FunctionCall):
        return item.arguments
    if isinstance(item, FunctionCallOutput):
        return item.output
    if isinstance(item, (McpCall, McpApprovalRequest)):
        return " ".join(filter(None, [item.arguments, getattr(item, "output", None)]))
    return ""
