"""Generation is not paced to playout: a response ends when its generation ends.

Over WebSocket the audio goes out as fast as it is made and the client buffers it; where the
server plays the audio itself it holds at most a bounded amount ahead of real time, and a
longer reply waits for playout on the session's clock (nothing is dropped)."""

from __future__ import annotations

import base64
import json
from typing import Any

from _helpers_protocol import eventually, settle, user_text, validated
from voxgate.engines.local.responder import BuiltinResponder
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.server.state import PLAYOUT_HOLD_S, AppState
from voxgate.session.engines import EngineSet
from voxgate.session.manager import SessionManager
from voxgate.session.session import SessionLimits
from voxgate.session.testing import running_session
from voxgate.settings import Settings

LONG = "This is one sentence of a long answer. " * 12  # ~28 s of scripted speech


def audio_seconds(events: list[dict[str, Any]]) -> float:
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    return sum(len(base64.b64decode(e["delta"])) for e in deltas) / 2 / 24000


def ask(run: Any) -> None:
    run.transport.send_event({"type": "conversation.item.create", "item": user_text("Hi")})
    run.transport.send_event({"type": "response.create"})


def test_websocket_sessions_are_not_paced_and_playout_sessions_are_bounded() -> None:
    state = AppState(
        Settings(),
        EngineSet(llm=BuiltinResponder(), tts=ScriptedTTS()),
        SessionManager(max_sessions=1),
        None,  # type: ignore[arg-type]  # the controls: these properties never touch them
    )
    assert state.limits.audio_lead_s is None
    assert state.playout_limits.audio_lead_s == PLAYOUT_HOLD_S


async def test_response_done_at_the_end_of_generation_without_time_passing() -> None:
    engines = EngineSet(llm=ScriptedLLM([text_script(LONG)]), tts=ScriptedTTS())
    async with running_session(engines) as run:
        ask(run)
        events = await run.transport.events_until("response.done")
        for text in run.transport.sent:
            validated(text)
        # All of the reply's audio went out, and the response ended, while the session's
        # clock stood still: nothing waited for the audio to play.
        assert audio_seconds(events) > 20
        assert run.clock.monotonic() == 0
        assert events[-1]["response"]["status"] == "completed"


async def test_a_reply_longer_than_the_hold_waits_for_playout_on_the_clock() -> None:
    engines = EngineSet(llm=ScriptedLLM([text_script(LONG)]), tts=ScriptedTTS())
    limits = SessionLimits(idle_timeout_s=None, audio_lead_s=5.0)
    async with running_session(engines, limits=limits) as run:
        ask(run)
        sent = run.transport.sent
        # Generation runs 5 s of audio ahead of the clock, then waits for it.
        await eventually(lambda: sent_audio_s(sent) >= 5)
        await settle()
        assert sent_audio_s(sent) <= 7
        assert not any('"response.done"' in text for text in sent)
        # As (virtual) time passes the rest follows, and nothing is lost.
        while not any('"response.done"' in text for text in sent):
            await run.clock.advance(0.5)
            await settle()
        total = sent_audio_s(sent)
        assert total > 20
        assert run.clock.monotonic() >= total - 5 - 1


def sent_audio_s(sent: list[str]) -> float:
    return audio_seconds([json.loads(text) for text in sent])
