"""``truncation``: a conversation longer than the model's window (``VOXGATE_LLM_CONTEXT_TOKENS``)
keeps being answered with ``auto`` / ``retention_ratio`` and fails clearly with ``disabled``."""

from __future__ import annotations

from typing import Any

import pytest
from openai import AsyncOpenAI

from _realtime import Events
from conftest import RunningServer
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.protocol.items import FunctionCall, FunctionCallOutput, Item, UserMessage
from voxgate.session.engines import EngineSet
from voxgate.session.truncation import ContextTooLong, fit, item_tokens


def count(text: str) -> int:
    """One token per word: sizes in these tests are easy to read."""
    return len(text.split())


def user(i: int, size: int = 10) -> UserMessage:
    text = " ".join([f"w{i}"] * size)
    return UserMessage(
        id=f"item_{i}",
        role="user",
        content=[{"type": "input_text", "text": text}],  # type: ignore[list-item]
    )


def fitted(items: list[Item], truncation: Any, window: int = 100) -> list[str | None]:
    kept = fit(
        items, truncation=truncation, window=window, fixed=10, max_output_tokens=20, count=count
    )
    return [i.id for i in kept]


# -- the policy ---------------------------------------------------------------------------


def test_a_fitting_conversation_is_sent_whole() -> None:
    items: list[Item] = [user(i) for i in range(4)]  # 4 x 14 = 56 tokens, budget 70
    assert fitted(items, "auto") == [f"item_{i}" for i in range(4)]
    assert fitted(items, "disabled") == [f"item_{i}" for i in range(4)]


def test_auto_drops_the_oldest_until_it_fits() -> None:
    items: list[Item] = [user(i) for i in range(10)]  # 140 tokens, budget 70
    assert item_tokens(items[0], count) == 14
    assert fitted(items, "auto") == [f"item_{i}" for i in range(5, 10)]  # 70 tokens


def test_retention_ratio_keeps_a_fraction_so_later_turns_fit() -> None:
    items: list[Item] = [user(i) for i in range(10)]
    ratio = {"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": None}
    assert fitted(items, ratio) == [f"item_{i}" for i in range(8, 10)]  # 28 <= 35
    limited = {**ratio, "retention_ratio": 1.0, "token_limits": {"post_instructions": 30}}
    assert fitted(items, limited) == [f"item_{i}" for i in range(8, 10)]


def test_disabled_fails_naming_the_setting() -> None:
    with pytest.raises(ContextTooLong) as caught:
        fitted([user(i) for i in range(10)], "disabled")
    assert caught.value.code == "context_length_exceeded"
    assert "VOXGATE_LLM_CONTEXT_TOKENS=100" in caught.value.message
    assert "'disabled'" in caught.value.message


def test_a_function_output_never_leads_without_its_call() -> None:
    call = FunctionCall(id="item_c", type="function_call", name="f", call_id="c1")
    output = FunctionCallOutput(
        id="item_o", type="function_call_output", call_id="c1", output=" ".join(["x"] * 8)
    )
    items: list[Item] = [*(user(i) for i in range(4)), call, output, user(9, size=20)]
    # Dropping to fit would leave the output first: it goes too.
    assert fitted(items, "auto", window=70) == ["item_9"]


def test_an_item_too_big_alone_fails_whatever_the_policy() -> None:
    with pytest.raises(ContextTooLong, match="newest conversation item alone"):
        fitted([user(0), user(1, size=200)], "auto")


def test_unknown_window_sends_everything() -> None:
    items: list[Item] = [user(i, size=1000) for i in range(5)]
    kept = fit(
        items, truncation="disabled", window=None, fixed=0, max_output_tokens=None, count=count
    )
    assert kept == items


# -- a long conversation through the SDK --------------------------------------------------

WINDOW = 700
TURNS = 12
# About 75 tokens a message (≈ 4 characters a token when tiktoken has no cached encoding).
SENTENCE = "please remember this fact for later " * 8


async def converse(server: RunningServer, llm: ScriptedLLM, truncation: Any) -> list[Any]:
    """TURNS user messages, a text response after each; the response.done events."""
    client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    done = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "max_output_tokens": 100,
                "truncation": truncation,
            }
        )
        await events.expect("session.updated")
        for turn in range(TURNS):
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"turn {turn}: {SENTENCE}"}],
                }
            )
            await conn.response.create()
            seen = await events.until("response.done")
            done.append(seen)
    return done


def scripted(turns: int) -> tuple[EngineSet, ScriptedLLM]:
    llm = ScriptedLLM([text_script("Noted.")] * turns)
    return EngineSet(llm=llm, tts=ScriptedTTS()), llm


async def test_auto_keeps_answering_past_the_window(start_server: Any) -> None:
    engines, llm = scripted(TURNS)
    server = start_server(engines, llm_context_tokens=WINDOW)
    turns = await converse(server, llm, "auto")
    assert [t[-1].response.status for t in turns] == ["completed"] * TURNS
    first_texts = [r.messages[0]["content"] for r in llm.requests]
    assert first_texts[0].startswith("turn 0:")
    assert not first_texts[-1].startswith("turn 0:")  # the oldest were dropped …
    last = llm.requests[-1].messages
    assert last[-1]["content"].startswith(f"turn {TURNS - 1}:")  # … never the newest
    # The conversation kept growing; what reached the model stayed within the window.
    sizes = [len(r.messages) for r in llm.requests]
    assert sizes[0] == 1 and max(sizes) < 2 * TURNS - 1
    assert llm.requests[-1].instructions == llm.requests[0].instructions


async def test_disabled_fails_with_the_over_length_error(start_server: Any) -> None:
    engines, llm = scripted(TURNS)
    server = start_server(engines, llm_context_tokens=WINDOW)
    turns = await converse(server, llm, "disabled")
    statuses = [t[-1].response.status for t in turns]
    assert "completed" in statuses and statuses[-1] == "failed"
    failed = turns[-1][-1].response
    assert failed.status_details.error.code == "context_length_exceeded"
    assert failed.status_details.error.type == "invalid_request_error"
    [error] = [e for e in turns[-1] if e.type == "error"]
    assert error.error.code == "context_length_exceeded"
    assert "truncation" in error.error.message
    # Failed responses never reached the model.
    assert len(llm.requests) == statuses.count("completed")
