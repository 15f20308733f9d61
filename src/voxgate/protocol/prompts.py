"""Stored prompts: ``prompt: {id, version, variables}`` in the session or a response, resolved
against the prompts the operator keeps in the server's config.

Rules:
- an unknown id, or a version other than the stored one, is an error naming it;
- ``{{name}}`` placeholders take the prompt's ``variables``: a string, or an ``input_text``
  object's text. A placeholder with no value, a variable the prompt does not use, and image or
  file variables (the model gets instructions as text) are errors naming them;
- the resolved text is the instructions of a response: a response's own ``instructions``
  win, then its ``prompt``, then the session's ``prompt``, then the session's
  ``instructions``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError
from .session import Prompt

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


@dataclass(frozen=True, slots=True)
class StoredPrompt:
    instructions: str
    version: str = "1"


def resolve(prompt: Prompt, store: Mapping[str, StoredPrompt], param: str) -> str:
    """The prompt's text with its variables filled in; ProtocolError naming what is wrong."""
    stored = store.get(prompt.id)
    if stored is None:
        known = ", ".join(sorted(store)) or "none are configured"
        raise ProtocolError(
            f"Prompt '{prompt.id}' not found. Stored prompts on this server: {known}.",
            code="prompt_not_found",
            param=f"{param}.id",
        )
    if prompt.version is not None and prompt.version != stored.version:
        raise ProtocolError(
            f"Prompt '{prompt.id}' has no version '{prompt.version}'; this server stores "
            f"version '{stored.version}'.",
            param=f"{param}.version",
        )
    values = {
        name: _text(value, f"{param}.variables.{name}")
        for name, value in (prompt.variables or {}).items()
    }
    used = set(_PLACEHOLDER.findall(stored.instructions))
    if missing := sorted(used - set(values)):
        raise ProtocolError(
            f"Prompt '{prompt.id}' needs a value for the variable '{missing[0]}'.",
            code="missing_required_parameter",
            param=f"{param}.variables.{missing[0]}",
        )
    if unused := sorted(set(values) - used):
        raise ProtocolError(
            f"Prompt '{prompt.id}' has no variable '{unused[0]}'.",
            code="unknown_parameter",
            param=f"{param}.variables.{unused[0]}",
        )
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], stored.instructions)


def _text(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "input_text":
        text = value.get("text")
        if isinstance(text, str):
            return text
    raise ProtocolError(
        "Prompt variables must be strings or input_text objects: instructions reach the "
        "language model as text, so images and files cannot fill a placeholder.",
        param=param,
    )


def instructions_for(
    *,
    response_instructions: str | None,
    response_prompt: Prompt | None,
    session_prompt: Prompt | None,
    session_instructions: str,
    store: Mapping[str, StoredPrompt],
) -> str:
    """The instructions a response is given (the order of precedence above)."""
    if response_instructions is not None:
        return response_instructions
    if response_prompt is not None:
        return resolve(response_prompt, store, "response.prompt")
    if session_prompt is not None:
        return resolve(session_prompt, store, "session.prompt")
    return session_instructions
