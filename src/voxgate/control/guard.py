"""The policy and client-secret binding applied to every session and response configuration
(`voxgate.protocol.guard.ConfigGuard`).

A client secret binds the session fields given when it was minted: changing any of them is
refused with ``bound_by_client_secret`` and changes nothing. Fields not bound may be set
within the policy's allowed models, voices and tools.
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import ProtocolError
from ..protocol.live import live_model_error
from ..protocol.response_params import ResponseParams
from ..protocol.session import SessionConfig
from .policy import Policy

_MISSING = object()
# Codes of a configuration the policy or a client secret's binding forbids (admission answers
# them with 403; a direct call's sideband reverts them), as opposed to a malformed one.
POLICY_CODES = frozenset(
    {
        "bound_by_client_secret",
        "model_not_allowed",
        "voice_not_allowed",
        "tool_not_allowed",
        "mcp_server_not_allowed",
    }
)


def bound_paths(bound: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a session patch (lists and null are leaves)."""
    paths: list[str] = []
    for key, value in bound.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths.extend(bound_paths(value, path + "."))
        else:
            paths.append(path)
    return paths


def _at(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _bound_error(path: str, where: str = "session") -> ProtocolError:
    return ProtocolError(
        f"'{where}.{path}' was fixed by the client secret this session was opened with and "
        "cannot be changed. Mint a new client secret with the configuration you need.",
        code="bound_by_client_secret",
        param=f"{where}.{path}",
    )


def _tool_names(tools: list[Any]) -> list[tuple[int, str]]:
    names = []
    for i, tool in enumerate(tools):
        name = getattr(tool, "name", None) or getattr(tool, "server_label", None)
        names.append((i, str(name)))
    return names


class PolicyGuard:
    def __init__(self, policy: Policy, bound: dict[str, Any] | None = None) -> None:
        self.policy = policy
        self.paths = bound_paths(bound) if bound else []
        self.bound_type = (bound or {}).get("type")

    def check_session(self, before: SessionConfig, after: SessionConfig, patch: Any) -> None:
        # The session type is not part of either configuration: a transcription secret
        # must not become a speaking session (nor the reverse).
        asked_type = patch.get("type") if isinstance(patch, dict) else None
        if self.bound_type is not None and asked_type not in (None, self.bound_type):
            raise _bound_error("type")
        old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
        for path in self.paths:
            if _at(old, path) != _at(new, path):
                raise _bound_error(path)
        self.check_config(after, before)

    def check_config(self, config: SessionConfig, before: SessionConfig | None = None) -> None:
        """The policy's allowed lists over a whole configuration (``before``: only what
        changed from it)."""
        changed_model = before is None or config.model != before.model
        if changed_model and (live := live_model_error(config.model, "session.model")):
            raise live
        if (before is None or config.model != before.model) and not self.policy.allows(
            "allowed_models", config.model
        ):
            raise not_allowed("model", config.model, "session.model")
        if (before is None or config.voice != before.voice) and not self.policy.allows(
            "allowed_voices", config.voice
        ):
            raise not_allowed("voice", config.voice, "session.audio.output.voice")
        self._check_tools(config.tools, "session.tools")

    def check_response(self, session: SessionConfig, params: ResponseParams) -> None:
        overrides: dict[str, Any] = {
            "instructions": params.instructions,
            "tool_choice": params.tool_choice,
            "max_output_tokens": params.max_output_tokens,
            "output_modalities": params.output_modalities,
        }
        if params.tools is not None:
            overrides["tools"] = [t.model_dump(mode="json") for t in params.tools]
        voice = params.audio.output.voice if params.audio and params.audio.output else None
        overrides["audio.output.voice"] = voice
        current = session.model_dump(mode="json")
        for path, value in overrides.items():
            if value is None or path not in self.paths:
                continue
            if hasattr(value, "model_dump"):
                value = value.model_dump(mode="json")
            if value != _at(current, path):
                raise _bound_error(path, "response")
        if isinstance(voice, str) and not self.policy.allows("allowed_voices", voice):
            raise not_allowed("voice", voice, "response.audio.output.voice")
        if params.tools is not None:
            self._check_tools(params.tools, "response.tools")

    def _check_tools(self, tools: list[Any], where: str) -> None:
        for i, name in _tool_names(tools):
            if getattr(tools[i], "type", None) == "mcp":
                # An MCP server's tools are checked by name when they are listed and called.
                self._check_mcp_server(tools[i].server_url or "", f"{where}[{i}].server_url")
                continue
            if not self.policy.allows("allowed_tools", name):
                raise ProtocolError(
                    f"Tool '{name}' is not allowed by this credential's policy (allowed_tools: "
                    f"{self.policy.allowed_tools}). Remove it or ask for a key that allows it.",
                    code="tool_not_allowed",
                    param=f"{where}[{i}]",
                )

    def _check_mcp_server(self, url: str, param: str) -> None:
        if not self.policy.allows("allowed_mcp_servers", url):
            raise ProtocolError(
                f"The MCP server '{url}' is not allowed by this credential's policy "
                f"(allowed_mcp_servers: {self.policy.allowed_mcp_servers}). Use a server it "
                "lists or ask for a key that allows this one.",
                code="mcp_server_not_allowed",
                param=param,
            )


def not_allowed(what: str, name: str, param: str) -> ProtocolError:
    allowed = {"model": "allowed_models", "voice": "allowed_voices"}[what]
    return ProtocolError(
        f"The {what} '{name}' is not allowed by this credential's policy ({allowed}).",
        code=f"{what}_not_allowed",
        param=param,
    )


def first_allowed_voice(config: SessionConfig, policy: Policy) -> dict[str, Any] | None:
    """A session patch to the first voice the policy names, when the configured voice (the
    server's default) is not allowed — rather than refusing every session that did not pick
    one. None when the voice is allowed or the policy names only patterns."""
    if policy.allows("allowed_voices", config.voice):
        return None
    named = [v for v in policy.allowed_voices or [] if not any(c in v for c in "*?[")]
    if not named:
        return None
    return {"type": "realtime", "audio": {"output": {"voice": named[0]}}}
