"""The parts of a response plan that shape the language model's request beyond its context:
instructions (a stored prompt resolved, see `prompts.py`), truncation, and the settings passed
through to the model. A response's own value wins over the session's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from .prompts import StoredPrompt, instructions_for
from .response_params import ResponseParams
from .session import SessionConfig


class ModelSettings(TypedDict):
    instructions: str
    truncation: str | dict[str, Any]
    parallel_tool_calls: bool | None
    reasoning_effort: str | None


def model_settings(
    params: ResponseParams, session: SessionConfig, prompts: Mapping[str, StoredPrompt]
) -> ModelSettings:
    reasoning = params.reasoning or session.reasoning
    parallel = params.parallel_tool_calls
    truncation = session.truncation
    return {
        "instructions": instructions_for(
            response_instructions=params.instructions,
            response_prompt=params.prompt,
            session_prompt=session.prompt,
            session_instructions=session.instructions,
            store=prompts,
        ),
        "truncation": truncation if isinstance(truncation, str) else truncation.model_dump(),
        "parallel_tool_calls": parallel if parallel is not None else session.parallel_tool_calls,
        "reasoning_effort": reasoning.effort if reasoning else None,
    }
