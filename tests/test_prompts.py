"""Stored prompts: kept in the config, referenced by ``prompt: {id, version, variables}`` in the
session or a response, resolved into the instructions the language model gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from _helpers_protocol import events, plan_of, send, started, the_error, types
from _realtime import Events
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.prompts import StoredPrompt
from voxgate.session.engines import EngineSet
from voxgate.settings import load_settings

PROMPT_ID = "pmpt_68b0c29740048196bd3a6e6ac3c4d0e20ed9a13f0d15bf5e"
STORE = {
    PROMPT_ID: StoredPrompt("You help {{customer}} with {{ product }}. Be brief.", version="3"),
    "pmpt_plain": StoredPrompt("Answer in French."),
}
VARIABLES = {"customer": "Ada", "product": {"type": "input_text", "text": "invoices"}}


def with_prompts() -> Any:
    return started(prompts=STORE)


def test_session_prompt_becomes_the_instructions() -> None:
    conn = with_prompts()
    prompt = {"id": PROMPT_ID, "version": "3", "variables": VARIABLES}
    out = send(conn, "session.update", session={"type": "realtime", "prompt": prompt})
    assert events(out)[0]["session"]["prompt"] == prompt  # echoed as given
    plan = plan_of(send(conn, "response.create"))
    assert plan.instructions == "You help Ada with invoices. Be brief."


def test_response_prompt_and_instructions_take_precedence() -> None:
    conn = with_prompts()
    prompt = {"id": PROMPT_ID, "variables": VARIABLES}
    send(conn, "session.update", session={"type": "realtime", "prompt": prompt})
    out = send(conn, "response.create", response={"prompt": {"id": "pmpt_plain"}})
    assert plan_of(out).instructions == "Answer in French."
    conn.finish_response(plan_of(out).response_id)
    out = send(conn, "response.create", response={"instructions": "Say hi."})
    assert plan_of(out).instructions == "Say hi."


@pytest.mark.parametrize(
    ("prompt", "param", "words"),
    [
        ({"id": "pmpt_nope"}, "session.prompt.id", ["pmpt_nope", "pmpt_plain"]),
        (
            {"id": PROMPT_ID, "version": "2", "variables": VARIABLES},
            "session.prompt.version",
            ["'2'", "'3'"],
        ),
        (
            {"id": PROMPT_ID, "variables": {"customer": "Ada"}},
            "session.prompt.variables.product",
            ["product"],
        ),
        ({"id": "pmpt_plain", "variables": {"x": "1"}}, "session.prompt.variables.x", ["'x'"]),
        (
            {"id": PROMPT_ID, "variables": {**VARIABLES, "customer": {"type": "input_image"}}},
            "session.prompt.variables.customer",
            ["strings"],
        ),
    ],
)
def test_bad_references_are_errors_naming_them(
    prompt: dict[str, Any], param: str, words: list[str]
) -> None:
    conn = with_prompts()
    before = conn.config
    error = the_error(send(conn, "session.update", session={"type": "realtime", "prompt": prompt}))
    assert error["param"] == param
    assert all(w in error["message"] for w in words), error["message"]
    assert conn.config == before  # nothing applied


def test_unknown_prompt_in_a_response_is_refused_before_it_starts() -> None:
    conn = with_prompts()
    error = the_error(send(conn, "response.create", response={"prompt": {"id": "pmpt_x"}}))
    assert (error["code"], error["param"]) == ("prompt_not_found", "response.prompt.id")
    assert conn.active_response_id is None
    assert types(events(send(conn, "response.create"))) == ["response.created"]


def test_prompts_come_from_the_config_file(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "voxgate.toml"
    monkeypatch.setenv("VOXGATE_CONFIG", str(config))  # restored after the test
    config.write_text(
        f'[prompts."{PROMPT_ID}"]\nversion = "3"\n'
        'instructions = "You help {{customer}} with {{product}}."\n'
    )
    settings = load_settings(config)
    prompt = settings.prompts[PROMPT_ID]
    assert (prompt.version, prompt.instructions) == ("3", "You help {{customer}} with {{product}}.")


async def test_a_stored_prompt_reaches_the_model(start_server: Any) -> None:
    llm = ScriptedLLM([text_script("Bonjour.")])
    server = start_server(
        EngineSet(llm=llm, tts=ScriptedTTS()),
        prompts={PROMPT_ID: {"version": "3", "instructions": "Help {{customer}} today."}},
    )
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={"type": "realtime", "prompt": {"id": "pmpt_missing"}}, event_id="bad"
        )
        error = (await events.expect("error")).error
        assert (error.code, error.event_id) == ("prompt_not_found", "bad")
        assert "pmpt_missing" in error.message and PROMPT_ID in error.message
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "prompt": {"id": PROMPT_ID, "version": "3", "variables": {"customer": "Ada"}},
            }
        )
        updated = await events.expect("session.updated")
        assert updated.session.prompt.id == PROMPT_ID
        await conn.response.create()
        done = (await events.until("response.done"))[-1]
        assert done.response.status == "completed"
    assert llm.requests[0].instructions == "Help Ada today."
