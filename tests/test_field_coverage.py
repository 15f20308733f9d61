"""Every field of the `openai` SDK's session types is honoured, refused, or documented as
accepted without effect — never silently echoed.

The SDK's pydantic models are walked, so a field a new SDK version adds fails
`test_every_sdk_field_is_classified` until someone decides what voxgate does with it:
- honoured: the test that shows it working is named here (and must exist);
- refused: sending it gives an `error` naming it (checked here);
- ignored: listed under "Accepted without effect" in docs/protocol.md (checked both ways),
  and accepted (checked here).
``response.create``'s ``input`` items are left out: they are parsed by the item models, which
refuse any field they do not know.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from openai.types.realtime import (
    RealtimeSessionCreateRequest,
    RealtimeTranscriptionSessionCreateRequest,
)
from openai.types.realtime.realtime_response_create_params import RealtimeResponseCreateParams
from pydantic import BaseModel

from _helpers_protocol import events, plan_of, send, started
from _helpers_protocol import types as event_types
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.prompts import StoredPrompt
from voxgate.session.engines import EngineSet
from voxgate.session.testing import running_session

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "protocol.md"
KINDS: dict[str, type[BaseModel]] = {
    "session": RealtimeSessionCreateRequest,
    "transcription_session": RealtimeTranscriptionSessionCreateRequest,
    "response": RealtimeResponseCreateParams,
}
PROMPTS = {"pmpt_cov": StoredPrompt("Talk about {{v}}.")}
IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
FILE = {"type": "input_file", "file_id": "file_1", "filename": "a.pdf", "file_url": "https://x"}


# -- walking the SDK's models -------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def sdk_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field, nested models included (list items and union members
    share their container's path)."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        paths.add(path)
        if path == "input" and model is RealtimeResponseCreateParams:
            continue  # items: see the module docstring
        for sub in _models(info.annotation):
            paths |= sdk_fields(sub, path)
    return paths


# -- what voxgate does with each ----------------------------------------------------------


def H(reference: str) -> tuple[str, Any]:
    """Honoured; ``reference`` is "test_file.py::test_name" of a test showing it work."""
    return ("honoured", reference)


def R(patch: dict[str, Any], param: str) -> tuple[str, Any]:
    """Refused: ``patch`` sets it, and the error's ``param`` is ``param``."""
    return ("refused", (patch, param))


def I(patch: dict[str, Any]) -> tuple[str, Any]:  # noqa: E743  # reads like the table's H and R
    """Accepted without effect (documented); ``patch`` sets it and must be accepted."""
    return ("ignored", patch)


VAD = "test_session_vad.py::"
TURNS = "test_turns.py::"
PLAN = "test_field_coverage.py::test_session_settings_reach_the_plan_and_the_voice"
OVERRIDES = "test_protocol_responses.py::test_per_response_overrides_reach_the_plan"
PASS_THROUGH = "test_llm_inputs.py::test_settings_pass_through_and_responses_override"
TRUNCATION = "test_truncation.py::test_retention_ratio_keeps_a_fraction_so_later_turns_fit"
NOISE = "test_noise_reduction.py::test_noise_alone_no_longer_starts_a_turn"
HINTS = "test_transcription_hints.py::test_detected_and_committed_turns_carry_the_hints"


def mcp_tool(field: str) -> tuple[str, Any]:
    """Per response, MCP servers are refused (they are listed once, in session.tools)."""
    tool = {"type": "mcp", "server_label": "s", "server_url": "https://x", field: "x"}
    return R({"tools": [tool]}, "tools[0].type")


MCP = "test_mcp_tools.py::test_tools_are_listed_called_refused_and_approved"
MCP_UNIT = "test_mcp_protocol.py::"


def mcp_session(field: str) -> tuple[str, Any]:
    """In session.tools: what each MCP field does."""
    top = field.split(".")[0]
    if top in ("connector_id", "tunnel_id", "defer_loading"):
        tool = {"type": "mcp", "server_label": "s", "server_url": "https://x", top: "x"}
        return R({"tools": [tool]}, f"tools[0].{top}")
    if top == "server_description":
        return H(MCP_UNIT + "test_the_model_reads_the_servers_description_with_each_tool")
    if top == "allowed_callers":
        tool = {"type": "mcp", "server_label": "s", "server_url": "https://x", top: ["direct"]}
        return I({"tools": [tool]})
    if field in ("headers", "authorization"):
        return H(MCP_UNIT + "test_headers_and_authorization_reach_the_server")
    if "read_only" in field or field.startswith("allowed_tools"):
        return H(MCP_UNIT + "test_filters_by_name_and_read_only_hint")
    if field.startswith("require_approval"):
        return H(MCP_UNIT + "test_approval_rules")
    return H(MCP)


def prompt_variable(value: Any) -> tuple[str, Any]:
    return R({"prompt": {"id": "pmpt_cov", "variables": {"v": value}}}, "prompt.variables.v")


def cache_breakpoint(breakpoint: dict[str, Any]) -> tuple[str, Any]:
    """Ignored: a prompt variable that carries `breakpoint` as its prompt_cache_breakpoint."""
    variable = {"type": "input_text", "text": "a", "prompt_cache_breakpoint": breakpoint}
    return I({"prompt": {"id": "pmpt_cov", "variables": {"v": variable}}})


MCP_ONLY = [
    "allowed_callers",
    "allowed_tools",
    "allowed_tools.read_only",
    "allowed_tools.tool_names",
    "authorization",
    "connector_id",
    "defer_loading",
    "headers",
    "require_approval",
    "require_approval.always",
    "require_approval.always.read_only",
    "require_approval.always.tool_names",
    "require_approval.never",
    "require_approval.never.read_only",
    "require_approval.never.tool_names",
    "server_description",
    "server_label",
    "server_url",
    "tunnel_id",
]

AUDIO_INPUT: dict[str, tuple[str, Any]] = {
    "audio": H("test_protocol_session.py::test_update_merges_nested_objects_field_by_field"),
    "audio.input": H("test_protocol_session.py::test_update_merges_nested_objects_field_by_field"),
    "audio.input.format": H(VAD + "test_g711_input_is_heard"),
    "audio.input.format.type": H(VAD + "test_g711_input_is_heard"),
    "audio.input.format.rate": H(VAD + "test_g711_input_is_heard"),
    "audio.input.noise_reduction": H(NOISE),
    "audio.input.noise_reduction.type": H(
        "test_noise_reduction.py::test_noise_is_suppressed_and_speech_kept"
    ),
    "audio.input.noise_reduction.strength": H(
        "test_noise_reduction.py::test_strength_picks_the_level"
    ),
    "audio.input.transcription": H(
        VAD + "test_a_spoken_turn_is_detected_committed_transcribed_and_answered"
    ),
    "audio.input.transcription.language": H(HINTS),
    "audio.input.transcription.prompt": H(HINTS),
    "audio.input.transcription.model": I(
        {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}
    ),
    "audio.input.transcription.languages": I(
        {"audio": {"input": {"transcription": {"languages": ["en", "de"]}}}}
    ),
    "audio.input.transcription.keywords": I(
        {"audio": {"input": {"transcription": {"keywords": ["voxgate"]}}}}
    ),
    "audio.input.transcription.delay": I({"audio": {"input": {"transcription": {"delay": "low"}}}}),
    "audio.input.turn_detection": H(
        VAD + "test_manual_commit_without_turn_detection_is_transcribed_for_the_model"
    ),
    "audio.input.turn_detection.type": H(
        VAD + "test_semantic_vad_ends_a_complete_utterance_quickly"
    ),
    "audio.input.turn_detection.create_response": H(
        VAD + "test_create_response_false_commits_without_answering"
    ),
    "audio.input.turn_detection.interrupt_response": H(
        VAD + "test_without_interrupt_response_the_reply_goes_on"
    ),
    "audio.input.turn_detection.eagerness": H(
        TURNS + "test_semantic_wait_is_short_when_complete_and_capped_when_not"
    ),
    "audio.input.turn_detection.idle_timeout_ms": H(
        VAD + "test_silence_only_makes_no_turn_until_the_idle_timeout"
    ),
    "audio.input.turn_detection.prefix_padding_ms": H(
        TURNS + "test_speech_start_includes_prefix_padding_and_end_includes_the_silence"
    ),
    "audio.input.turn_detection.silence_duration_ms": H(
        VAD + "test_two_utterances_with_a_short_pause_are_one_turn_or_two_as_configured"
    ),
    "audio.input.turn_detection.threshold": H(TURNS + "test_below_threshold_never_starts_a_turn"),
}

# Tests that show several fields of one object honoured.
ROUND_TRIP = "test_conformance_sdk.py::test_function_call_round_trip"
NAMED_CHOICE = "test_responder.py::test_named_tool_choice_calls_that_function"
BAD_PROMPT = "test_prompts.py::test_bad_references_are_errors_naming_them"
PROMPT_VARS = "test_prompts.py::test_session_prompt_becomes_the_instructions"

TOOLS: dict[str, tuple[str, Any]] = {
    "tools": H(ROUND_TRIP),
    "tools.type": H(ROUND_TRIP),
    "tools.name": H(ROUND_TRIP),
    "tools.description": H("test_llm_openai_chat.py::test_streams_a_tool_call_split_over_chunks"),
    "tools.parameters": H(ROUND_TRIP),
    "tool_choice": H(NAMED_CHOICE),
    "tool_choice.type": H(NAMED_CHOICE),
    "tool_choice.name": H(NAMED_CHOICE),
    "tool_choice.server_label": H(MCP_UNIT + "test_an_mcp_tool_choice_forces_that_server_or_tool"),
}

PROMPT: dict[str, tuple[str, Any]] = {
    "prompt": H("test_prompts.py::test_a_stored_prompt_reaches_the_model"),
    "prompt.id": H(BAD_PROMPT),
    "prompt.version": H(BAD_PROMPT),
    "prompt.variables": H(PROMPT_VARS),
    "prompt.variables.type": H(PROMPT_VARS),
    "prompt.variables.text": H(PROMPT_VARS),
    "prompt.variables.prompt_cache_breakpoint": cache_breakpoint({"mode": "explicit"}),
    "prompt.variables.prompt_cache_breakpoint.mode": cache_breakpoint({"mode": "explicit"}),
    "prompt.variables.prompt_cache_breakpoint.ttl": cache_breakpoint(
        {"mode": "explicit", "ttl": "30m"}
    ),
    "prompt.variables.image_url": prompt_variable(IMAGE),
    "prompt.variables.detail": prompt_variable(IMAGE),
    "prompt.variables.file_id": prompt_variable(FILE),
    "prompt.variables.file_url": prompt_variable(FILE),
    "prompt.variables.filename": prompt_variable(FILE),
    "prompt.variables.file_data": prompt_variable({"type": "input_file", "file_data": "AAAA"}),
}

OUTPUT: dict[str, tuple[str, Any]] = {
    "audio.output": H(PLAN),
    "audio.output.format": H("test_voice_e2e.py::test_g711_in_and_out"),
    "audio.output.format.type": H("test_voice_e2e.py::test_g711_in_and_out"),
    "audio.output.format.rate": H("test_voice_e2e.py::test_g711_in_and_out"),
    "audio.output.voice": H(PLAN),
    "audio.output.voice.id": H(
        "test_espeak.py::test_espeak_voice_names_work_and_unknown_names_fall_back"
    ),
}

TABLE: dict[str, dict[str, tuple[str, Any]]] = {
    "session": {
        "type": H(
            "test_protocol_transcription.py::test_type_switches_only_while_the_conversation_is_empty"
        ),
        **AUDIO_INPUT,
        **OUTPUT,
        "audio.output.speed": H(PLAN),
        **TOOLS,
        **{f"tools.{field}": mcp_session(field) for field in MCP_ONLY},
        **PROMPT,
        "include": R({"include": ["item.input_audio_transcription.logprobs"]}, "include"),
        "instructions": H("test_session_turns.py::test_text_turn_end_to_end"),
        "max_output_tokens": H(PLAN),
        "model": I({"model": "gpt-realtime-mini"}),
        "output_modalities": H("test_conformance_sdk.py::test_text_only_session_streams_text"),
        "parallel_tool_calls": H(PASS_THROUGH),
        "reasoning": H(PASS_THROUGH),
        "reasoning.effort": H(PASS_THROUGH),
        "tracing": I({"tracing": "auto"}),
        "tracing.workflow_name": I({"tracing": {"workflow_name": "w"}}),
        "tracing.group_id": I({"tracing": {"group_id": "g"}}),
        "tracing.metadata": I({"tracing": {"metadata": {"k": "v"}}}),
        "truncation": H("test_truncation.py::test_auto_keeps_answering_past_the_window"),
        "truncation.type": H(TRUNCATION),
        "truncation.retention_ratio": H(TRUNCATION),
        "truncation.token_limits": H(TRUNCATION),
        "truncation.token_limits.post_instructions": H(TRUNCATION),
    },
    "transcription_session": {
        "type": H(
            "test_transcription_session.py::test_intent_transcription_transcribes_streamed_speech"
        ),
        **AUDIO_INPUT,
        "audio.input.turn_detection.idle_timeout_ms": R(
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}
                }
            },
            "audio.input.turn_detection.idle_timeout_ms",
        ),
        "audio.input.turn_detection.create_response": I(
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "create_response": True}}
                }
            }
        ),
        "audio.input.turn_detection.interrupt_response": I(
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}
                }
            }
        ),
        "include": R({"include": ["item.input_audio_transcription.logprobs"]}, "include"),
    },
    "response": {
        "audio": H(OVERRIDES),
        **OUTPUT,
        "audio.output": H(OVERRIDES),
        "audio.output.voice": H(OVERRIDES),
        "conversation": H(
            "test_protocol_responses.py::test_out_of_band_response_stays_out_of_the_conversation"
        ),
        "input": H("test_protocol_responses.py::test_response_input_resolves_item_references"),
        "instructions": H(OVERRIDES),
        "max_output_tokens": H(OVERRIDES),
        "metadata": H(
            "test_protocol_responses.py::test_out_of_band_response_stays_out_of_the_conversation"
        ),
        "output_modalities": H(OVERRIDES),
        "parallel_tool_calls": H(PASS_THROUGH),
        "reasoning": H(PASS_THROUGH),
        "reasoning.effort": H(PASS_THROUGH),
        **TOOLS,
        **{f"tools.{field}": mcp_tool(field) for field in MCP_ONLY},
        "tool_choice": H(OVERRIDES),
        **PROMPT,
        "prompt": H("test_prompts.py::test_response_prompt_and_instructions_take_precedence"),
    },
}


def documented_ignored() -> set[str]:
    """Every ``kind.path`` named under "Accepted without effect" in docs/protocol.md."""
    text = DOCS.read_text()
    section = text.split("## Accepted without effect", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`((?:session|transcription_session|response)\.[a-z_.]+)`", section))


def connection(kind: str) -> RealtimeConnection:
    conn = RealtimeConnection(
        intent="transcription" if kind == "transcription_session" else None, prompts=PROMPTS
    )
    conn.start()
    return conn


def apply(conn: RealtimeConnection, kind: str, patch: dict[str, Any]) -> list[dict[str, Any]]:
    if kind == "response":
        return events(send(conn, "response.create", response=patch))
    session_type = "transcription" if kind == "transcription_session" else "realtime"
    return events(send(conn, "session.update", session={"type": session_type, **patch}))


def entries(status: str) -> list[tuple[str, str, Any]]:
    return [
        (kind, path, detail)
        for kind, table in TABLE.items()
        for path, (what, detail) in table.items()
        if what == status
    ]


# -- the checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_sdk_field_is_classified(kind: str) -> None:
    fields = sdk_fields(KINDS[kind])
    table = TABLE[kind]
    assert not (unclassified := sorted(fields - set(table))), (
        f"SDK fields of {KINDS[kind].__name__} that voxgate has not decided on: {unclassified}. "
        "Honour each (and name its test here), refuse it with an error naming it, or document "
        "it under 'Accepted without effect' in docs/protocol.md."
    )
    assert not (stale := sorted(set(table) - fields)), f"no longer in the SDK: {stale}"


def test_the_ignore_list_is_exactly_what_the_docs_say() -> None:
    listed = {f"{kind}.{path}" for kind, path, _ in entries("ignored")}
    assert listed == documented_ignored()


@pytest.mark.parametrize(("kind", "path", "reference"), entries("honoured"))
def test_honoured_fields_name_a_test_that_exists(kind: str, path: str, reference: str) -> None:
    file, name = reference.split("::")
    assert re.search(rf"^(async )?def {name}\(", (TESTS / file).read_text(), re.MULTILINE), (
        f"{kind}.{path}: {reference} does not exist"
    )


@pytest.mark.parametrize(("kind", "path", "case"), entries("refused"))
def test_refused_fields_get_an_error_naming_them(kind: str, path: str, case: Any) -> None:
    patch, param = case
    out = apply(connection(kind), kind, patch)
    assert event_types(out) == ["error"], (path, event_types(out))
    prefix = "response" if kind == "response" else "session"
    assert out[0]["error"]["param"] == f"{prefix}.{param}", out[0]["error"]


@pytest.mark.parametrize(("kind", "path", "patch"), entries("ignored"))
def test_ignored_fields_are_accepted(kind: str, path: str, patch: dict[str, Any]) -> None:
    out = apply(connection(kind), kind, patch)
    assert "error" not in event_types(out), (path, out)


# -- the settings whose proof lives here --------------------------------------------------


async def test_session_settings_reach_the_plan_and_the_voice() -> None:
    conn = started()
    session = {
        "type": "realtime",
        "max_output_tokens": 40,
        "audio": {"output": {"voice": "ash", "speed": 1.5, "format": {"type": "audio/pcma"}}},
    }
    send(conn, "session.update", session=session)
    plan = plan_of(send(conn, "response.create"))
    assert (plan.voice, plan.speed, plan.output_format) == ("ash", 1.5, "audio/pcma")
    assert plan.max_output_tokens == 40
    # And through a running session, the speech engine is asked for that voice and speed.
    tts = ScriptedTTS()
    engines = EngineSet(llm=ScriptedLLM([text_script("Hello there.")]), tts=tts)
    async with running_session(engines) as run:
        await run.transport.next_event()
        session["audio"] = {"output": {"voice": "ash", "speed": 1.5}}
        run.transport.send_event({"type": "session.update", "session": session})
        run.transport.send_event({"type": "response.create"})
        turn = await run.transport.events_until("response.done")
    assert tts.voices == ["ash"]
    audio = sum(
        len(e["delta"]) * 3 // 4 for e in turn if e["type"] == "response.output_audio.delta"
    )
    expected_ms = tts.duration_ms("Hello there.", speed=1.5)
    assert audio == pytest.approx(expected_ms * 48, rel=0.05)  # 24 kHz PCM16: 48 bytes/ms
    assert json.loads(json.dumps(turn[-1]))["response"]["max_output_tokens"] == 40
