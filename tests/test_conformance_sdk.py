"""The official `openai` SDK realtime client against a live voxgate server on the embedded
engines. Every server event is validated against the SDK's own server-event union."""

from __future__ import annotations

import base64
import json

from openai import AsyncOpenAI

from _realtime import Events, add_user_text, audio_bytes, rms, types
from conftest import RunningServer, speech_pcm24k

MODEL = "gpt-realtime"
AUDIO_TURN = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
AUDIO_END = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def client(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key="sk-test")


async def test_session_update_then_text_turn_speaks(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = await events.expect("session.created")
        assert created.session.type == "realtime"
        assert created.session.model == MODEL
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Be brief.",
                "model": MODEL,
                "audio": {"output": {"voice": "coral"}},
            }
        )
        updated = await events.expect("session.updated")
        assert updated.session.instructions == "Be brief."
        assert updated.session.audio.output.voice == "coral"

        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hello from the test"}],
            }
        )
        added = await events.expect("conversation.item.added")
        await events.expect("conversation.item.done")
        await conn.response.create()
        turn = await events.until("response.done")

        names = types(turn)
        assert names[:4] == AUDIO_TURN
        assert names[-6:] == AUDIO_END
        assert set(names[4:-6]) == {"response.output_audio_transcript.delta"}
        done = turn[-1].response
        assert done.status == "completed"
        assert done.usage.output_token_details.audio_tokens > 0
        transcript = done.output[0].content[0].transcript
        assert "Hello from the test" in transcript  # the built-in responder echoes
        assert turn[2].previous_item_id == added.item.id
        speech = audio_bytes(turn)
        assert len(speech) > 24000 * 2  # more than a second of 24 kHz PCM16
        assert rms(speech) > 500  # real speech, not silence


async def test_text_only_session_streams_text(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await events.expect("session.updated")
        await add_user_text(conn, events, "text please")
        await conn.response.create()
        turn = await events.until("response.done")
        names = types(turn, audio=True)
        assert "response.output_audio.delta" not in names
        assert names.count("response.output_text.delta") > 3  # streamed, not one blob
        text_done = next(e for e in turn if e.type == "response.output_text.done")
        assert "text please" in text_done.text
        part = next(e for e in turn if e.type == "response.content_part.done").part
        assert part.type == "text"


async def test_manual_audio_turn(voxgate_server: RunningServer) -> None:
    speech = speech_pcm24k("What a lovely day it is today.")
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        updated = await events.expect("session.updated")
        assert updated.session.audio.input.turn_detection is None
        await conn.input_audio_buffer.clear()
        await events.expect("input_audio_buffer.cleared")
        for start in range(0, len(speech), 9600):  # 200 ms appends, as a client streams
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(speech[start : start + 9600]).decode()
            )
        await conn.input_audio_buffer.commit()
        committed = await events.expect("input_audio_buffer.committed")
        item = (await events.expect("conversation.item.added")).item
        assert item.id == committed.item_id
        assert item.content[0].type == "input_audio"
        await events.expect("conversation.item.done")

        await conn.response.create()
        turn = await events.until("response.done")
        assert turn[-1].response.status == "completed"
        assert turn[-1].response.usage.input_token_details.audio_tokens > 0
        assert rms(audio_bytes(turn)) > 500
        transcript = next(e for e in turn if e.type == "response.output_audio_transcript.done")
        assert transcript.transcript

        # The stored user audio comes back byte for byte.
        await conn.conversation.item.retrieve(item_id=item.id)
        retrieved = await events.expect("conversation.item.retrieved")
        assert base64.b64decode(retrieved.item.content[0].audio) == speech


async def test_function_call_round_trip(voxgate_server: RunningServer) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await conn.session.update(
            session={"type": "realtime", "tools": [tool], "output_modalities": ["text"]}
        )
        await events.expect("session.updated")
        await add_user_text(conn, events, "get weather for Paris")
        await conn.response.create()
        turn = await events.until("response.done")
        names = types(turn)
        assert "response.function_call_arguments.delta" in names
        args_done = next(e for e in turn if e.type == "response.function_call_arguments.done")
        assert args_done.name == "get_weather"
        assert json.loads(args_done.arguments)["city"] == "Paris"
        call = turn[-1].response.output[-1]
        assert call.type == "function_call" and call.call_id == args_done.call_id

        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": json.dumps({"forecast": "sunny and 21 degrees"}),
            }
        )
        out_item = (await events.expect("conversation.item.added")).item
        assert out_item.type == "function_call_output"
        await events.expect("conversation.item.done")
        await conn.response.create()
        answer = await events.until("response.done")
        text = next(e for e in answer if e.type == "response.output_text.done").text
        assert "sunny and 21 degrees" in text


async def test_item_retrieve_delete_truncate(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        user = await add_user_text(conn, events, "Tell me something long.")
        await conn.response.create()
        turn = await events.until("response.done")
        assistant = turn[-1].response.output[0]
        full = assistant.content[0].transcript
        audio_ms = len(audio_bytes(turn)) / 48

        await conn.conversation.item.truncate(
            item_id=assistant.id, content_index=0, audio_end_ms=1500
        )
        truncated = await events.expect("conversation.item.truncated")
        assert (truncated.item_id, truncated.audio_end_ms) == (assistant.id, 1500)
        await conn.conversation.item.retrieve(item_id=assistant.id)
        kept = (await events.expect("conversation.item.retrieved")).item
        assert len(base64.b64decode(kept.content[0].audio)) == 1500 * 48
        assert kept.content[0].transcript and len(kept.content[0].transcript) < len(full)
        assert full.startswith(kept.content[0].transcript)

        await conn.conversation.item.truncate(
            item_id=assistant.id, content_index=0, audio_end_ms=int(audio_ms) + 5000
        )
        error = await events.expect("error")
        assert "shorter than" in error.error.message

        await conn.conversation.item.delete(item_id=user.id)
        assert (await events.expect("conversation.item.deleted")).item_id == user.id
        await conn.conversation.item.retrieve(item_id=user.id, event_id="evt_gone")
        error = await events.expect("error")
        assert error.error.event_id == "evt_gone"
        assert user.id in error.error.message


async def test_response_cancel_mid_response(start_server, slow_chat_server) -> None:
    server = start_server(llm_base_url=slow_chat_server.url, llm_model="slow-model")
    async with client(server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        await add_user_text(conn, events, "talk for a while")
        await conn.response.create()
        # Wait for the first spoken words, then cancel while the model is still streaming.
        await events.until("response.output_audio.delta")
        await conn.response.cancel()
        rest = await events.until("response.done")
        done = rest[-1].response
        assert done.status == "cancelled"
        assert done.status_details.reason == "client_cancelled"
        assert done.output[0].status == "incomplete"
        assert "response.output_item.done" in types(rest)
        assert slow_chat_server.closed_early.wait(5), "the LLM stream was not closed"
        # Exactly one response.done; the session keeps working.
        await conn.response.cancel(event_id="evt_again")
        error = await events.expect("error")
        assert error.error.code == "response_cancel_not_active"
        assert error.error.event_id == "evt_again"
        assert all(e.type != "response.done" for e in events.all[events.all.index(rest[-1]) + 1 :])


async def test_out_of_band_response(voxgate_server: RunningServer) -> None:
    async with client(voxgate_server).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        await events.expect("session.created")
        user = await add_user_text(conn, events, "in the conversation")
        await conn.response.create(
            response={
                "conversation": "none",
                "metadata": {"topic": "summary"},
                "output_modalities": ["text"],
                "instructions": "Summarise.",
                "input": [
                    {"type": "item_reference", "id": user.id},
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "only for this response"}],
                    },
                ],
            }
        )
        turn = await events.until("response.done")
        assert not [e for e in turn if e.type.startswith("conversation.item")]
        created, done = turn[0].response, turn[-1].response
        assert created.conversation_id is None and done.conversation_id is None
        assert done.metadata == {"topic": "summary"}
        assert "only for this response" in done.output[0].content[0].text
        # Nothing entered the default conversation.
        await conn.conversation.item.retrieve(item_id=done.output[0].id)
        assert (await events.expect("error")).error.code == "item_not_found"
