"""Errors of the Realtime protocol.

The peer's mistakes (`ProtocolError`) become `error` events and the session goes on; our own
bugs are ordinary exceptions and never masquerade as client errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ProtocolError(Exception):
    """A client event that cannot be applied. Becomes an OpenAI-shaped ``error`` event."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = "invalid_value",
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def to_error(self, client_event_id: str | None) -> dict[str, Any]:
        """The ``error`` object of an ``error`` server event."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }


def server_bug(event_type: str) -> ProtocolError:
    """The error for a client event our own code failed to apply (a bug, logged as such)."""
    return ProtocolError(
        f"The server failed to apply this {event_type} event; it changed nothing you can "
        "rely on. This is a server bug: please report it.",
        code="server_error",
        type="server_error",
    )


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about huge inputs."""
    text = repr(value) if not isinstance(value, dict | list) or len(value) < limit else ""
    text = text or f"<{type(value).__name__} of {len(value)} entries>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Discriminator values of the protocol's tagged unions, as pydantic reports them in `loc`.
_UNION_TAGS = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "literal",
        "dict",
        "list",
        "function",
        "mcp",
        "server_vad",
        "semantic_vad",
        "audio/pcm",
        "audio/pcmu",
        "audio/pcma",
        "message",
        "function_call",
        "function_call_output",
        "item_reference",
        "input_text",
        "input_audio",
        "input_image",
        "output_text",
        "output_audio",
        "system",
        "user",
        "assistant",
        "TracingConfig",
        "RetentionRatio",
        "constrained-int",
        "is-instance",
    }
)


def _dotted(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or part.startswith(("function-", "literal[")):
            # pydantic puts union-branch tags in locations; they are not field names.
            continue
        else:
            path = f"{path}.{part}" if path else part
    return path


def from_validation_error(exc: ValidationError, prefix: str = "") -> ProtocolError:
    """The first problem pydantic found, phrased the way the Realtime API phrases it."""
    err = exc.errors(include_url=False)[0]
    param = _dotted(prefix, tuple(err["loc"]))
    kind = err["type"]
    if kind == "missing":
        return ProtocolError(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    if kind == "extra_forbidden":
        return ProtocolError(
            f"Unknown parameter: '{param}'.", code="unknown_parameter", param=param
        )
    ctx = err.get("ctx", {})
    if kind == "union_tag_invalid":
        param = f"{param}.{ctx.get('discriminator', 'type').strip(chr(39))}"
        return ProtocolError(
            f"Invalid value: {brief(ctx.get('tag'))}. "
            f"Supported values are: {ctx.get('expected_tags')}.",
            code="invalid_value",
            param=param,
        )
    if kind in {"literal_error", "enum"}:
        got = err.get("input")
        expected = ctx.get("expected")
        return ProtocolError(
            f"Invalid value: {brief(got)}. Supported values are: {expected}.",
            code="invalid_value",
            param=param,
        )
    if kind == "union_tag_not_found":
        tag = ctx.get("discriminator", "'type'").strip("'")
        param = f"{param}.{tag}" if param else tag
        return ProtocolError(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    return ProtocolError(
        f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param
    )
