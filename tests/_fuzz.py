"""Hypothesis strategies for client frames: mostly well-formed events of every type with
plausible fields, each possibly mutated (a field replaced by any JSON value, a field dropped,
an unknown field added, the type broken), plus raw garbage. Strings include lone surrogates,
which `json.dumps` writes as ``\\udXXX`` escapes."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
AUDIO = st.binary(max_size=4800).map(lambda b: base64.b64encode(b).decode())
ITEM_IDS = st.sampled_from(["item_a", "item_b", "root", "nope"]) | TEXT
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "input_audio", "output_text", "text", "x"])},
    optional={"text": TEXT, "audio": AUDIO | TEXT, "transcript": TEXT},
)
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "bogus"])},
    optional={
        "id": ITEM_IDS,
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": st.lists(PART | JSON, max_size=3),
        "call_id": TEXT,
        "name": TEXT,
        "arguments": TEXT,
        "output": TEXT,
        "status": st.sampled_from(["completed", "in_progress", "x"]),
    },
)
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "mcp", "x"]), "name": TEXT},
    optional={"description": TEXT, "parameters": JSON},
)
SESSION = st.fixed_dictionaries(
    {"type": st.sampled_from(["realtime", "transcription", "x"])},
    optional={
        "instructions": TEXT,
        "output_modalities": st.sampled_from([["text"], ["audio"], ["x"], []]),
        "model": st.sampled_from(["gpt-realtime", "other"]) | TEXT,
        "max_output_tokens": st.integers(-5, 5000) | st.just("inf"),
        "tools": st.lists(TOOL, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | JSON,
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": st.sampled_from(
                            [{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}]
                        )
                        | JSON,
                        "turn_detection": st.none()
                        | st.fixed_dictionaries(
                            {"type": st.sampled_from(["server_vad", "semantic_vad", "x"])}
                        ),
                        "transcription": st.none() | JSON,
                    },
                ),
                "output": st.fixed_dictionaries(
                    {}, optional={"voice": st.sampled_from(["alloy", "ash"]) | JSON}
                ),
            },
        ),
    },
)
RESPONSE = st.fixed_dictionaries(
    {},
    optional={
        "conversation": st.sampled_from(["auto", "none", "x"]),
        "output_modalities": st.sampled_from([["text"], ["audio"], ["x"]]),
        "instructions": TEXT,
        "input": st.lists(
            ITEM | st.fixed_dictionaries({"type": st.just("item_reference"), "id": ITEM_IDS}),
            max_size=2,
        ),
        "max_output_tokens": st.integers(-5, 5000) | st.just("inf"),
        "metadata": st.dictionaries(TEXT, TEXT, max_size=3),
        "tools": st.lists(TOOL, max_size=2),
    },
)
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "session.update": {"session": SESSION},
    "input_audio_buffer.append": {"audio": AUDIO},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "output_audio_buffer.clear": {"response_id": TEXT},
    "conversation.item.create": {"item": ITEM, "previous_item_id": ITEM_IDS},
    "conversation.item.retrieve": {"item_id": ITEM_IDS},
    "conversation.item.delete": {"item_id": ITEM_IDS},
    "conversation.item.truncate": {
        "item_id": ITEM_IDS,
        "content_index": st.integers(-1, 3),
        "audio_end_ms": st.integers(-10, 10_000),
    },
    "response.create": {"response": RESPONSE},
    "response.cancel": {"response_id": TEXT},
}


@st.composite
def client_event(draw: st.DrawFn) -> dict[str, Any]:
    """One event of a real type, its fields drawn (optional ones sometimes left out)."""
    kind = draw(st.sampled_from(sorted(FIELDS)))
    event: dict[str, Any] = {"type": kind}
    for name, values in FIELDS[kind].items():
        if draw(st.booleans()):
            event[name] = draw(values)
    if draw(st.booleans()):
        event["event_id"] = draw(TEXT)
    return event


@st.composite
def mutated(draw: st.DrawFn, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with one thing changed: any field (type included) replaced by any JSON
    value, a field dropped, or an unknown field added."""
    event = dict(event)
    how = draw(st.sampled_from(["replace", "drop", "add"]))
    if how == "add":
        event[draw(st.text(max_size=8))] = draw(JSON)
    elif how == "drop":
        event.pop(draw(st.sampled_from(sorted(event))))
    else:
        event[draw(st.sampled_from(sorted(event)))] = draw(JSON)
    return event


@st.composite
def broken_type(draw: st.DrawFn) -> str:
    """A frame whose ``type`` is certainly invalid: it must get exactly one error."""
    event = draw(client_event())
    event["type"] = draw(JSON.filter(lambda v: not isinstance(v, str)) | st.just("bogus"))
    return json.dumps(event)


GARBAGE = st.one_of(
    TEXT,
    st.binary(max_size=20),
    JSON.map(json.dumps),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: '{"type":"session.update","session":' + "[" * n),
)
FRAME: st.SearchStrategy[str | bytes] = st.one_of(
    client_event().map(json.dumps),
    client_event().flatmap(mutated).map(json.dumps),
    broken_type(),
    GARBAGE,
)
