"""Per-session caps: conversation items and bytes, a single item's size, responses in flight
(out-of-band ones included), text handed to speech per response, and bounded pieces of text
for speech synthesis however long a word or an unpunctuated text is."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from _helpers_protocol import (
    add_user_text,
    send,
    start_response,
    started,
    the_error,
    user_text,
    validated,
)
from voxgate.engines.local.espeak import split_text
from voxgate.engines.testing import (
    ScriptedLLM,
    ScriptedSTT,
    ScriptedSTTStream,
    ScriptedTTS,
    text_script,
)
from voxgate.protocol.limits import ConnectionLimits
from voxgate.session.engines import EngineSet
from voxgate.session.sentences import MAX_PIECE_CHARS, SentenceSplitter
from voxgate.session.session import SessionLimits
from voxgate.session.testing import running_session


def test_an_item_over_the_single_item_limit_is_refused() -> None:
    conn = started(limits=ConnectionLimits(max_item_bytes=10_000))
    out = send(conn, "conversation.item.create", item=user_text("x" * 20_000), event_id="e1")
    error = the_error(out)
    assert error["code"] == "item_too_large" and error["param"] == "item"
    assert error["event_id"] == "e1"
    assert len(conn.conversation) == 0
    add_user_text(conn, "small", "item_small")  # smaller items still go in


def test_audio_counts_towards_an_items_size() -> None:
    conn = started(limits=ConnectionLimits(max_item_bytes=10_000))
    audio = base64.b64encode(bytes(20_000)).decode()
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
    assert the_error(send(conn, "conversation.item.create", item=item))["code"] == "item_too_large"


def test_the_conversation_is_bounded_in_items() -> None:
    conn = started(limits=ConnectionLimits(max_items=3))
    for i in range(3):
        add_user_text(conn, "hi", f"item_{i}")
    error = the_error(send(conn, "conversation.item.create", item=user_text("one more")))
    assert error["code"] == "conversation_too_large"
    assert "conversation.item.delete" in error["message"]
    send(conn, "conversation.item.delete", item_id="item_0")
    add_user_text(conn, "now it fits", "item_3")


def test_the_conversation_is_bounded_in_bytes() -> None:
    conn = started(limits=ConnectionLimits(max_bytes=50_000))
    for i in range(4):
        add_user_text(conn, "x" * 10_000, f"item_{i}")
    error = the_error(send(conn, "conversation.item.create", item=user_text("y" * 10_000)))
    assert error["code"] == "conversation_too_large"
    assert len(conn.conversation) == 4


def test_committed_audio_over_the_budget_drops_the_oldest_audio_not_the_turn() -> None:
    conn = started(limits=ConnectionLimits(max_bytes=100_000))
    for _ in range(3):
        send(conn, "input_audio_buffer.append", audio=base64.b64encode(bytes(48_000)).decode())
        send(conn, "input_audio_buffer.commit")
    assert len(conn.conversation) == 3  # every turn is there...
    assert conn.budget.total(conn.conversation) <= 100_000  # ...the oldest audio is not
    newest = [item.id for item in conn.conversation][-1]
    assert newest in conn.conversation.audio


def test_responses_in_flight_are_bounded_out_of_band_included() -> None:
    conn = started(limits=ConnectionLimits(max_responses=2))
    start_response(conn, conversation="none")
    start_response(conn)
    error = the_error(send(conn, "response.create", response={"conversation": "none"}))
    assert error["code"] == "too_many_responses"
    assert "cancel" in error["message"]


def test_a_long_word_and_unpunctuated_text_reach_speech_in_bounded_pieces() -> None:
    splitter = SentenceSplitter()
    pieces = splitter.push("a" * 100_000) + [splitter.flush()]
    assert max(map(len, pieces)) <= MAX_PIECE_CHARS
    assert "".join(pieces) == "a" * 100_000
    splitter = SentenceSplitter()
    words = ["word"] * 20_000
    pieces = [p for w in words for p in splitter.push(w + " ")] + [splitter.flush()]
    assert max(map(len, pieces)) <= MAX_PIECE_CHARS
    assert " ".join(pieces).split() == words
    assert max(map(len, split_text("b" * 10_000, 300))) == 300


async def test_text_handed_to_speech_is_bounded_per_response() -> None:
    reply = "This sentence is spoken. " * 100  # 2,500 characters
    llm = ScriptedLLM([text_script(reply), text_script("Short.")])
    tts = ScriptedTTS(ms_per_char=1)
    limits = SessionLimits(idle_timeout_s=None, max_speech_chars=500)
    async with running_session(
        EngineSet(llm=llm, tts=tts), limits=limits, validate=validated
    ) as run:
        await run.transport.next_event()
        run.transport.send_event({"type": "response.create"})
        seen = await run.transport.events_until("response.done")
        errors = [e for e in seen if e["type"] == "error"]
        assert [e["error"]["code"] for e in errors] == ["response_speech_too_long"]
        assert seen[-1]["response"]["status"] == "incomplete"
        assert sum(map(len, tts.texts)) <= 500
        # The next response starts afresh.
        run.transport.send_event({"type": "response.create"})
        done = (await run.transport.events_until("response.done"))[-1]
        assert done["response"]["status"] == "completed"


class GatedSTT(ScriptedSTT):
    """Streams open only once the test opens the gate; records how many were open at once."""

    def __init__(self, count: int) -> None:
        super().__init__(["words"] * count)
        self.gate = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def open_stream(self, **hints: Any) -> ScriptedSTTStream:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        await self.gate.wait()
        self.waiting -= 1
        return await super().open_stream(**hints)


async def test_a_session_holds_one_speech_to_text_worker_and_a_bounded_queue() -> None:
    stt = GatedSTT(20)
    engines = EngineSet(llm=ScriptedLLM([]), tts=ScriptedTTS(), stt=stt)
    async with running_session(engines, validate=validated) as run:
        await run.transport.next_event()
        transcribed = {"transcription": {"model": "whisper-1"}, "turn_detection": None}
        update = {"type": "realtime", "audio": {"input": transcribed}}
        run.transport.send_event({"type": "session.update", "session": update})
        await run.transport.events_until("session.updated")
        for _ in range(10):
            audio = base64.b64encode(bytes(4800)).decode()
            run.transport.send_event({"type": "input_audio_buffer.append", "audio": audio})
            run.transport.send_event({"type": "input_audio_buffer.commit"})
        failed = [(await run.transport.events_until(TRANSCRIPTION_FAILED))[-1] for _ in range(2)]
        assert all("commit less often" in f["error"]["message"] for f in failed)
        assert stt.most_waiting == 1  # one at a time, the rest queued in the session
        stt.gate.set()
        done = [(await run.transport.events_until(TRANSCRIPTION_DONE))[-1] for _ in range(8)]
        assert [d["transcript"] for d in done] == ["words"] * 8


TRANSCRIPTION_FAILED = "conversation.item.input_audio_transcription.failed"
TRANSCRIPTION_DONE = "conversation.item.input_audio_transcription.completed"
