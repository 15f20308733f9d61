"""The checks a tool call passes before anything runs: who may use the tool, and whether
its arguments fit the tool's schema. Each refusal names its guardrail, for the model (an
error output it can speak about) and for the audit log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from ..identity import Principal
from .spec import ToolSpec

REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call did not run: ``guardrail`` is the audit code, ``message`` what the model
    is told (so it can say so, or correct itself)."""

    guardrail: str
    message: str

    def output(self) -> str:
        return json.dumps({"error": {"code": self.guardrail, "message": self.message}})


def may_use(spec: ToolSpec, principal: Principal | None) -> bool:
    """Whether the caller may use the tool: its policy's ``allowed_tools`` and the tool's
    ``audience``. No principal (a session built directly) is development mode."""
    if principal is not None and not principal.policy.allows("allowed_tools", spec.name):
        return False
    audience = spec.audience
    if audience is None:
        return True
    if principal is None:
        return False
    if audience.key_ids is not None and principal.key_id not in audience.key_ids:
        return False
    if audience.tenants is not None and principal.tenant not in audience.tenants:
        return False
    return audience.scopes is None or any(principal.has(s) for s in audience.scopes)


def not_allowed(name: str) -> Refusal:
    return Refusal(
        "tool_not_allowed",
        f"The tool '{name}' is not available to this caller; it was not run. Tell the user "
        "this cannot be done here.",
    )


def parse_arguments(spec: ToolSpec, raw: str) -> dict[str, Any] | Refusal:
    """The call's arguments, checked against the tool's JSON Schema; a Refusal carrying the
    validation message when they do not fit (the tool never sees them)."""
    return check_arguments(spec.name, spec.parameters, raw)


def check_arguments(name: str, schema: dict[str, Any], raw: str) -> dict[str, Any] | Refusal:
    """``parse_arguments`` for any tool with a JSON Schema (MCP tools too)."""
    try:
        arguments = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        return Refusal("invalid_arguments", f"The arguments are not valid JSON ({exc.msg}).")
    if not isinstance(arguments, dict):
        return Refusal("invalid_arguments", "The arguments must be a JSON object.")
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=str)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(the arguments)"
        return Refusal(
            "invalid_arguments",
            f"Invalid arguments for '{name}' at {where}: {first.message}. Correct them "
            "and call the tool again.",
        )
    return arguments


def redacted(spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments as logs and the audit log may show them."""
    return {k: REDACTED if k in spec.sensitive_args else v for k, v in arguments.items()}
