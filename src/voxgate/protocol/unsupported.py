"""Settings the SDK types allow and voxgate cannot honour: refused with an error naming them,
never accepted and echoed as if they worked (docs/protocol.md lists what is accepted and
deliberately has no effect).

- MCP servers reached through the hosted service (``connector_id``, ``tunnel_id``) or
  given per response (voxgate lists a server's tools once per session, so MCP servers go
  in ``session.tools``);
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
        if not isinstance(tool, dict) or tool.get("type") != "mcp":
            continue
        if prefix == "response":
            raise _refused(
                f"{prefix}.tools[{i}].type",
                "MCP servers cannot be given per response; add them to session.tools "
                "(session.update), where their tools are listed once.",
            )
        for hosted in ("connector_id", "tunnel_id"):
            if tool.get(hosted) is not None:
                raise _refused(
                    f"{prefix}.tools[{i}].{hosted}",
                    f"'{hosted}' needs the hosted service's connectors; give the MCP "
                    "server's own 'server_url' (streamable HTTP) instead.",
                )
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
