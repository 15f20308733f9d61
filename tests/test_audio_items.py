"""User audio sent inside items (``conversation.item.create``, ``response.create`` ``input``)
is heard: transcribed like a committed turn, before the response that uses it."""

from __future__ import annotations

import base64
from typing import Any

from openai import AsyncOpenAI

from _helpers_protocol import commands, events, send, started, the_error, types
from _realtime import Events
from conftest import RunningServer, heard, speech_pcm24k
from voxgate.protocol.commands import StartResponse, TranscribeItem, UserInput

CLIP = ("one two three four five", {"two", "three", "four"})
AUDIO = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM16


def audio_item(audio: str = AUDIO, **part: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": audio, **part}],
    }


# -- the connection -----------------------------------------------------------------------


def test_created_audio_item_is_transcribed() -> None:
    conn = started()
    out = send(conn, "conversation.item.create", item={**audio_item(), "id": "item_a"})
    assert types(events(out)) == ["conversation.item.added", "conversation.item.done"]
    [transcribe] = commands(out)
    assert transcribe == TranscribeItem("item_a", bytes(4800), "audio/pcm")
    conn.transcription_done("item_a", "hello there", 0.1)
    assert conn.conversation.get("item_a").content[0].transcript == "hello there"  # type: ignore[union-attr]


def test_audio_with_a_transcript_is_taken_at_its_word() -> None:
    conn = started()
    out = send(conn, "conversation.item.create", item=audio_item(transcript="as given"))
    assert not [c for c in commands(out) if isinstance(c, TranscribeItem)]
    [record] = commands(out)  # the words, for the transcript store
    assert isinstance(record, UserInput) and record.text == "as given"


def test_inline_audio_is_transcribed_before_the_response_starts() -> None:
    conn = started()
    update = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    send(conn, "session.update", session={"type": "realtime", **update})
    out = send(
        conn,
        "response.create",
        response={"conversation": "none", "input": [{**audio_item(), "id": "item_in"}]},
    )
    assert types(events(out)) == ["response.created"]
    transcribe, start = commands(out)
    assert transcribe == TranscribeItem("item_in", bytes(4800), "audio/pcm")
    assert isinstance(start, StartResponse)
    [item] = start.plan.context
    assert "item_in" not in conn.conversation  # out of band: the conversation is untouched
    # The transcript lands on the item the response sees, with the usual events.
    done = events(conn.transcription_done("item_in", "the words", 0.1))
    assert types(done) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert done[1]["usage"] == {"type": "duration", "seconds": 0.1}
    assert item.content[0].transcript == "the words"  # type: ignore[union-attr]
    assert conn._inline == {}  # nothing kept once heard


def test_bad_inline_audio_changes_nothing() -> None:
    conn = started()
    good = {**audio_item(), "id": "item_ok"}
    error = the_error(
        send(conn, "response.create", response={"input": [good, audio_item("not base64!")]})
    )
    assert error["param"] == "response.input[1].content[0].audio"
    assert conn._inline == {} and conn.active_response_id is None


# -- through the SDK, with speech ---------------------------------------------------------


async def test_recorded_clip_is_answered_on_its_content(voxgate_server: RunningServer) -> None:
    text, key_words = CLIP
    clip = base64.b64encode(speech_pcm24k(text)).decode()
    client = AsyncOpenAI(base_url=voxgate_server.base_url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            }
        )
        await events.expect("session.updated")
        await conn.conversation.item.create(item=audio_item(clip))  # type: ignore[arg-type]
        added = await events.expect("conversation.item.added")
        await events.expect("conversation.item.done")
        await conn.response.create()
        seen = await events.until("response.done", wait_s=60)
        [completed] = [
            e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
        ]
        assert completed.item_id == added.item.id
        assert heard(completed.transcript, key_words), completed.transcript
        assert completed.usage.type == "duration" and completed.usage.seconds > 1.0
        # The built-in responder repeats what the model was given: the clip's words.
        answer = seen[-1].response.output[0].content[0].text
        assert completed.transcript in answer.lower(), answer

        # The same clip out of band, in response.create's input: heard, answered, not kept.
        await conn.response.create(
            response={"conversation": "none", "input": [audio_item(clip)]}  # type: ignore[list-item]
        )
        seen = await events.until("response.done", wait_s=60)
        [completed] = [
            e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
        ]
        assert heard(completed.transcript, key_words), completed.transcript
        answer = seen[-1].response.output[0].content[0].text
        assert completed.transcript in answer.lower(), answer
