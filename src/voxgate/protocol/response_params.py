"""``response.create``'s ``response`` object: per-response overrides (PROTOCOL.md §8.1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import unsupported
from .errors import ProtocolError, from_validation_error
from .session import AudioFormatConfig, Prompt, Reasoning, Tool, ToolChoice


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResponseAudioOutput(_Strict):
    format: AudioFormatConfig | None = None
    voice: str | dict[str, str] | None = None


class ResponseAudio(_Strict):
    output: ResponseAudioOutput | None = None


class ResponseParams(_Strict):
    conversation: Literal["auto", "none"] | str = "auto"
    input: list[dict[str, Any]] | None = None
    instructions: str | None = None
    output_modalities: list[Literal["audio", "text"]] | None = Field(
        None, min_length=1, max_length=1
    )
    audio: ResponseAudio | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    prompt: Prompt | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("at most 16 key-value pairs are allowed")
            if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
                raise ValueError("keys may have at most 64 characters and values at most 512")
        return value


def parse_response_params(raw: dict[str, Any] | None) -> ResponseParams:
    unsupported.check(raw or {}, "response")
    try:
        params = ResponseParams.model_validate(raw or {})
    except ValidationError as exc:
        raise from_validation_error(exc, "response") from None
    if params.conversation not in ("auto", "none"):
        raise ProtocolError(
            f"Invalid value: {params.conversation!r}. Only 'auto' (the session's conversation) "
            "and 'none' (out of band) are supported.",
            param="response.conversation",
        )
    return params
