"""Settings the SDK types allow and voxgate cannot honour: refused with an error naming them,
never accepted and echoed as if they worked (docs/protocol.md lists what is accepted and
deliberately has no effect).

- ``tools`` of type ``mcp`` and ``tool_choice`` ``{"type": "mcp"}``: there is no MCP client;
- ``include: ["item.input_audio_transcription.logprobs"]`` when the server's recogniser gives
  no log probabilities (pocketsphinx; Whisper gives them).
"""

from __future__ import annotations

from typing import Any

from .errors import ProtocolError

LOGPROBS = "item.input_audio_transcription.logprobs"


def check(patch: dict[str, Any], prefix: str, *, logprobs: bool = False) -> None:
    """Raise ProtocolError for the first unsupported setting in a session or response
    patch (``prefix`` is "session" or "response"). ``logprobs``: whether the recogniser
    gives token log probabilities."""
    for i, tool in enumerate(_list(patch.get("tools"))):
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            raise _refused(
                f"{prefix}.tools[{i}].type",
                "MCP tools are not supported: this server has no MCP client. Define the "
                "tools as functions (type 'function') and call the MCP server yourself.",
            )
    choice = patch.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "mcp":
        raise _refused(f"{prefix}.tool_choice.type", "MCP tool choices are not supported.")
    if not logprobs and LOGPROBS in _list(patch.get("include")):
        raise _refused(
            f"{prefix}.include",
            f"'{LOGPROBS}' is not available: the server's speech recogniser gives no log "
            "probabilities. Leave 'include' out.",
        )


def _refused(param: str, message: str) -> ProtocolError:
    return ProtocolError(message, code="unsupported_parameter", param=param)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
