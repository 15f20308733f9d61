"""A server tool as the operator declares it (``[[tools]]`` in the config file).

The definition is checked when the settings load: a schema that is not valid JSON Schema, a
target that is not ``module:function``, or an HTTP tool without a URL stops start-up with a
message naming the tool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

Effect = Literal["read", "write", "destructive"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9_-]{1,64}$"
DEFAULT_FILLER = "One moment while I check that."
# How long a confirmation stays open unless a tool says otherwise; MCP approval requests
# expire after it too.
CONFIRM_EXPIRY_S = 60.0


class Audience(BaseModel):
    """Who may use a tool. Each list that is given must match (a key id in ``key_ids``, the
    tenant in ``tenants``, one of the caller's scopes in ``scopes``); lists left out do not
    restrict."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_ids: list[str] | None = None
    tenants: list[str] | None = None
    scopes: list[str] | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    kind: Literal["http", "python"]
    # kind = "http": the arguments are POSTed (or sent with ``method``) as JSON.
    url: str | None = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    # Header values may name environment variables: "Bearer ${CRM_TOKEN}".
    headers: dict[str, str] = Field(default_factory=dict)
    # kind = "python": "package.module:function", sync or async, called with the arguments
    # as keyword arguments.
    target: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)
    effect: Effect = "read"
    # None: true for write and destructive tools, false for read tools.
    confirm: bool | None = None
    # A spoken "yes" may approve it (else only an mcp_approval_response item may).
    spoken_confirmation: bool = True
    # How long a confirmation stays open.
    confirm_expiry_s: float = Field(CONFIRM_EXPIRY_S, gt=0, le=3600)
    audience: Audience | None = None
    max_calls_per_session: int | None = Field(None, ge=1)
    # Calls of this tool running at once, over all sessions of this server.
    max_concurrency: int = Field(8, ge=1)
    # Argument names whose values never reach logs or the audit log.
    sensitive_args: list[str] = Field(default_factory=list)
    # What the assistant says when the tool takes longer than a moment (None: a default).
    filler: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ToolSpec:
        if self.kind == "http" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError(f"tool {self.name!r}: kind 'http' needs a url (http:// or https://)")
        if self.kind == "python" and not re.fullmatch(r"[\w.]+:\w+", self.target or ""):
            raise ValueError(f"tool {self.name!r}: kind 'python' needs target 'module:function'")
        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r}: parameters is not a valid JSON Schema: {exc.message}"
            ) from None
        if self.parameters.get("type", "object") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must describe an object")
        return self

    @property
    def needs_confirmation(self) -> bool:
        return self.confirm if self.confirm is not None else self.effect != "read"

    @property
    def filler_text(self) -> str:
        return self.filler or DEFAULT_FILLER

    def definition(self) -> dict[str, Any]:
        """The function tool offered to the model (the shape of a session's ``tools`` entry)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def resolved_headers(self, env: Mapping[str, str]) -> dict[str, str]:
        """Headers with ``${NAME}`` replaced from ``env``; a missing variable raises
        KeyError naming it (checked at start-up, so a typo never reaches a call)."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise KeyError(f"tool {self.name!r}: environment variable {name} is not set")
            return env[name]

        return {k: _ENV_REF.sub(value, v) for k, v in self.headers.items()}


def check_unique(specs: list[ToolSpec]) -> list[ToolSpec]:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two tools are named {spec.name!r}; tool names must be unique")
        seen.add(spec.name)
    return specs
