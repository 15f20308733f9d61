"""Transcription sessions through the official `openai` SDK on the embedded engines: streamed
speech is turned into transcripts, every event validates against the SDK's types, and no
response is ever created."""

from __future__ import annotations

import base64
from typing import Any

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from _realtime import Events, types
from conftest import RunningServer, heard, speech_pcm24k

CHUNK_BYTES = 24 * 2 * 20  # 20 ms of 24 kHz PCM16
# Sentences the embedded recogniser hears well in the embedded voice; all but one key word
# must come back (the recogniser's result varies a little with what it heard before).
SENTENCES = (
    ("one two three four five", {"two", "three", "four"}),
    ("i would like to order a pizza", {"like", "order", "pizza"}),
)
PER_ITEM = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
]


def client(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="sk-test")


async def stream(conn: AsyncRealtimeConnection, pcm: bytes) -> None:
    """Append audio the way a microphone client does, 20 ms per event. Turn detection
    counts audio time, so the pace of the appends does not change the turns."""
    for start in range(0, len(pcm), CHUNK_BYTES):
        chunk = pcm[start : start + CHUNK_BYTES]
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())


def silence(seconds: float) -> bytes:
    return bytes(int(24000 * seconds) * 2)


def for_item(events: list[Any], item_id: str) -> list[str]:
    """Types of the events about one item, in order."""
    out = []
    for e in events:
        ids = {getattr(e, "item_id", None), getattr(getattr(e, "item", None), "id", None)}
        if item_id in ids:
            out.append(e.type)
    return out


async def transcribe_sentences(conn: AsyncRealtimeConnection, events: Events) -> list[Any]:
    """Speak each sentence with silence around it; the events up to the last transcript."""
    audio = silence(0.3)
    for text, _ in SENTENCES:
        audio += speech_pcm24k(text) + silence(1.0)
    await stream(conn, audio)
    seen: list[Any] = []
    for _ in SENTENCES:
        seen += await events.until(
            "conversation.item.input_audio_transcription.completed", wait_s=60
        )
    return seen


def check_transcripts(seen: list[Any]) -> None:
    assert not [t for t in types(seen) if t.startswith("response.")], types(seen)
    added = [e for e in seen if e.type == "conversation.item.added"]
    order = [a.item.id for a in added]
    # Transcripts of different items may arrive in either order (each is decoded on its
    # own): match them to the items in the order they were spoken.
    completed = sorted(
        (e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"),
        key=lambda e: order.index(e.item_id),
    )
    assert len(completed) == len(SENTENCES)
    for event, (_, key_words) in zip(completed, SENTENCES, strict=True):
        assert heard(event.transcript, key_words), event.transcript
        assert event.usage.type == "duration" and event.usage.seconds > 1.0
        assert for_item(seen, event.item_id) == PER_ITEM, for_item(seen, event.item_id)
        [delta] = [e for e in seen if e.type.endswith(".delta") and e.item_id == event.item_id]
        assert delta.delta == event.transcript
    assert [a.item.content[0].type for a in added] == ["input_audio"] * len(SENTENCES)
    assert added[1].previous_item_id == added[0].item.id


async def test_intent_transcription_transcribes_streamed_speech(
    voxgate_server: RunningServer,
) -> None:
    async with client(voxgate_server).realtime.connect(
        extra_query={"intent": "transcription"}
    ) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        assert created.session.type == "transcription"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        updated = await events.expect("session.updated")
        assert updated.session.type == "transcription"
        assert updated.session.audio.input.transcription.model == "gpt-4o-transcribe"
        seen = await transcribe_sentences(conn, events)
        check_transcripts(seen)

        # Asking for a response is refused, and still nothing is generated.
        await conn.response.create(event_id="ask")
        error = await events.expect("error")
        assert (error.error.code, error.error.event_id) == ("unsupported_event", "ask")


async def test_session_update_switches_to_transcription(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        assert (await events.expect("session.created")).session.type == "realtime"
        await conn.session.update(
            session={"type": "transcription", "audio": {"input": {"transcription": {}}}}
        )
        updated = await events.expect("session.updated")
        assert updated.session.type == "transcription"
        seen = await transcribe_sentences(conn, events)
        check_transcripts(seen)


async def test_realtime_only_fields_are_refused(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(
        extra_query={"intent": "transcription"}
    ) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.send(
            {  # type: ignore[arg-type]  # deliberately not a valid transcription session
                "type": "session.update",
                "session": {"type": "transcription", "instructions": "Be brief."},
            }
        )
        error = (await events.expect("error")).error
        assert (error.code, error.param) == ("unknown_parameter", "session.instructions")
        await conn.session.update(
            session={"type": "transcription", "audio": {"input": {"transcription": None}}}
        )
        error = (await events.expect("error")).error
        assert error.param == "session.audio.input.transcription"


async def test_an_unknown_intent_is_refused(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(
        model="gpt-realtime", extra_query={"intent": "translation"}
    ) as conn:
        error = (await Events(conn).expect("error")).error
        assert (error.code, error.param) == ("invalid_value", None)
        assert "'translation'" in error.message and "'transcription'" in error.message
