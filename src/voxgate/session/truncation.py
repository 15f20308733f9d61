"""Context that fits: the session's ``truncation`` applied to what a response sends the LLM.

The conversation itself is never changed; only the model's input is trimmed (as the hosted
API does). The window is the language model's context size (``VOXGATE_LLM_CONTEXT_TOKENS``);
unknown (None) means nothing is ever dropped.

Budget: the window, less the tokens kept for the answer (``max_output_tokens``, or
`DEFAULT_OUTPUT_RESERVE` capped at a quarter of the window when unlimited), less the
instructions and tools (always kept). The conversation must fit in what is left
(``token_limits.post_instructions`` can lower it). When it does not:
- ``"auto"``: the oldest items are dropped until it fits;
- ``retention_ratio`` r: the oldest items are dropped until it fills at most r of the budget,
  so the next turns fit without dropping again;
- ``"disabled"``: nothing is dropped; the response fails with ``context_length_exceeded``.
A function call's output never leads the context without its call (Chat Completions refuses
a tool message with no call before it). If even the newest item alone cannot fit, the
response fails the same way whatever the policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..engines.errors import EngineError
from ..protocol.items import FunctionCall, FunctionCallOutput, InputImage, Item, item_text

DEFAULT_OUTPUT_RESERVE = 4096
# Chat formats add a few tokens per message (role, separators).
MESSAGE_OVERHEAD = 4
# What a picture costs in the model's input, as the hosted API prices a low-detail image.
IMAGE_TOKENS = 85


class ContextTooLong(EngineError):
    """The context does not fit the model's window and may not (or cannot) be trimmed."""

    code = "context_length_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message, origin="llm")


def item_tokens(item: Item, count: Callable[[str], int]) -> int:
    tokens = MESSAGE_OVERHEAD + count(item_text(item))
    if isinstance(item, FunctionCall):
        tokens += count(item.name)
    images = getattr(item, "content", None) or []
    return tokens + IMAGE_TOKENS * sum(isinstance(p, InputImage) for p in images)


def fixed_tokens(
    instructions: str, tools: list[dict[str, Any]], count: Callable[[str], int]
) -> int:
    """What is always sent: the instructions and the tool definitions."""
    return MESSAGE_OVERHEAD + count(instructions) + sum(count(json.dumps(t)) for t in tools)


def fit(
    items: list[Item],
    *,
    truncation: str | dict[str, Any],
    window: int | None,
    fixed: int,
    max_output_tokens: int | None,
    count: Callable[[str], int],
) -> list[Item]:
    """The newest items that fit, per the policy above; raises ContextTooLong."""
    if window is None:
        return items
    reserve = max_output_tokens or min(DEFAULT_OUTPUT_RESERVE, window // 4)
    budget = window - reserve - fixed
    ratio = 1.0
    if isinstance(truncation, dict):
        ratio = float(truncation.get("retention_ratio", 1.0))
        limit = (truncation.get("token_limits") or {}).get("post_instructions")
        if limit is not None:
            budget = min(budget, int(limit))
    sizes = [item_tokens(item, count) for item in items]
    total = sum(sizes)
    if total <= budget:
        return items
    if truncation == "disabled":
        raise ContextTooLong(
            f"The conversation ({total} tokens) does not fit the model's context: "
            f"{_budget_text(window, reserve, fixed, budget)}. With session.truncation "
            "'disabled' nothing is dropped: delete items (conversation.item.delete) or set "
            "truncation to 'auto'."
        )
    target = budget if truncation == "auto" else int(budget * ratio)
    start = 0
    while start < len(items) - 1 and total > target:
        total -= sizes[start]
        start += 1
    while start < len(items) and isinstance(items[start], FunctionCallOutput):
        total -= sizes[start]
        start += 1
    if start == len(items) or total > budget:
        raise ContextTooLong(
            f"The newest conversation item alone ({sizes[-1]} tokens) does not fit the "
            f"model's context: {_budget_text(window, reserve, fixed, budget)}. Shorten it, "
            "the instructions or the tools, or lower max_output_tokens."
        )
    return items[start:]


def _budget_text(window: int, reserve: int, fixed: int, budget: int) -> str:
    return (
        f"{budget} tokens are left of VOXGATE_LLM_CONTEXT_TOKENS={window} after {reserve} kept "
        f"for the answer and {fixed} for instructions and tools"
    )
