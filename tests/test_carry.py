"""The conversation carried from an upstream session to another engine (protocol/carry.py):
the mirror is fed the server events a real voxgate connection makes (the same protocol an
upstream speaks), then seeds a local connection or replays into a fresh one."""

from __future__ import annotations

import base64
import json
from typing import Any

from _helpers_protocol import (
    add_user_text,
    events,
    send,
    start_response,
    started,
    types,
    update,
)
from voxgate.protocol import carry
from voxgate.protocol.carry import ConversationMirror, replay_events, seed_connection
from voxgate.protocol.commands import TranscribeItem
from voxgate.protocol.connection import Output, RealtimeConnection
from voxgate.protocol.events import parse_client_event
from voxgate.protocol.items import AssistantMessage, UserMessage, item_text
from voxgate.protocol.user_audio import IDLE_KEEP_MS, UserAudio, written_by
from voxgate.session.context import chat_messages


class Upstream:
    """A voxgate connection playing the upstream; every server event it makes is mirrored."""

    def __init__(self, *, transcripts: bool = True) -> None:
        self.conn = started()
        self.mirror = ConversationMirror()
        self.mirror.observe(self.conn.session_created().model_dump(mode="json"))
        # Transcripts of user audio reach clients (and so the mirror) only when asked for.
        if transcripts:
            transcription = {"transcription": {"model": "whisper-1"}}
            self.feed(update(self.conn, audio={"input": transcription}))

    def client(self, type: str, **fields: Any) -> list[dict[str, Any]]:
        """A client event as the relay handles it: written upstream (the mirror keeps what it
        does to the input), then answered by the upstream."""
        raw = json.dumps({"type": type, **fields})
        event, _, error = parse_client_event(raw)
        assert event is not None, error
        self.mirror.user_audio.write(written_by(event, self.conn.input_format))
        return self.feed(self.conn.receive(raw))

    def feed(self, outputs: list[Output]) -> list[dict[str, Any]]:
        seen = events(outputs)
        for event in seen:
            self.mirror.observe(json.loads(json.dumps(event)))
        return seen

    def reply(self, words: list[str], audio: bool = True, finish: bool = True) -> str:
        """One assistant reply spoken piece by piece; returns its item id."""
        rid = start_response(self.conn).response_id
        self.mirror.observe({"type": "response.created", "response": self._response(rid)})
        item_id = ""
        for word in words:
            seen = self.feed(self.conn.response_text(rid, word))
            if audio:
                seen += self.feed(self.conn.response_audio(rid, b"\x01\x00" * 2400))  # 100 ms
            item_id = item_id or next(e["item"]["id"] for e in seen if "item" in e)
        self.feed(self.conn.response_message_done(rid))
        if finish:
            self.feed(self.conn.finish_response(rid))
        return item_id

    def _response(self, rid: str) -> dict[str, Any]:
        return {"id": rid, "object": "realtime.response", "conversation_id": "conv_1"}


def spoken_turn(up: Upstream, transcript: str) -> str:
    """A user turn committed from audio, transcribed later (as a VAD turn would be)."""
    send(up.conn, "input_audio_buffer.append", audio=base64.b64encode(bytes(9600)).decode())
    out = up.conn.commit()
    up.feed(out)
    item_id = next(e["item_id"] for e in events(out) if e["type"].endswith("committed"))
    up.feed(up.conn.transcription_done(item_id, transcript, 0.2))
    return item_id


def texts(items: list[Any]) -> list[str]:
    return [item_text(i) for i in items]


def test_mirror_holds_items_in_order_with_transcripts() -> None:
    up = Upstream()
    up.feed(update(up.conn, instructions="Be a pirate."))
    up.feed(send(up.conn, "conversation.item.create", item=_user("My name is Ada.", "item_a")))
    up.reply(["Ahoy ", "Ada!"])
    spoken_turn(up, "What is my name?")
    assert texts(up.mirror.items()) == ["My name is Ada.", "Ahoy Ada!", "What is my name?"]
    assert [i.id for i in up.mirror.items()] == [i.id for i in up.conn.conversation]
    assert up.mirror.config_patch()["instructions"] == "Be a pirate."
    assert "id" not in up.mirror.config_patch()


def test_items_placed_by_previous_item_id_and_deleted() -> None:
    up = Upstream()
    add_user_text(up.conn, "second", "item_2")
    up.feed(send(up.conn, "conversation.item.retrieve", item_id="item_2"))
    up.mirror = ConversationMirror()  # start again, feeding the events this time
    up.feed(send(up.conn, "conversation.item.delete", item_id="item_2"))
    up.feed(send(up.conn, "conversation.item.create", item=_user("b", "item_b")))
    up.feed(
        send(
            up.conn, "conversation.item.create", item=_user("a", "item_a"), previous_item_id="root"
        )
    )
    up.feed(
        send(
            up.conn,
            "conversation.item.create",
            item=_user("c", "item_c"),
            previous_item_id="item_a",
        )
    )
    assert [i.id for i in up.mirror.items()] == ["item_a", "item_c", "item_b"]
    up.feed(send(up.conn, "conversation.item.delete", item_id="item_c"))
    assert [i.id for i in up.mirror.items()] == ["item_a", "item_b"]


def test_truncation_keeps_only_the_words_heard() -> None:
    up = Upstream()
    item_id = up.reply(["One. ", "Two. ", "Three. ", "Four."])  # 100 ms of audio per piece
    out = up.feed(
        send(
            up.conn,
            "conversation.item.truncate",
            item_id=item_id,
            content_index=0,
            audio_end_ms=150,
        )
    )
    assert types(out) == ["conversation.item.truncated"]
    (item,) = up.mirror.items()
    local = up.conn.conversation.get(item_id)
    assert item_text(item) == item_text(local) == "One. Two. "


def test_cut_off_response_keeps_what_was_said_as_incomplete() -> None:
    up = Upstream()
    up.feed(send(up.conn, "conversation.item.create", item=_user("Tell me a story.", "item_u")))
    item_id = up.reply(["Once upon ", "a time"], finish=False)
    assert list(up.mirror.open_responses.values()) == [[item_id]]
    up.mirror.cut(list(up.mirror.open_responses))
    assert up.mirror.open_responses == {}
    items = up.mirror.items()
    assert texts(items) == ["Tell me a story.", "Once upon a time"]
    assert items[1].status == "incomplete"


def test_speech_and_versions_follow_the_upstream() -> None:
    mirror = ConversationMirror()
    mirror.observe({"type": "input_audio_buffer.speech_started", "item_id": "item_1"})
    assert mirror.speaking
    before = mirror.version
    mirror.observe({"type": "rate_limits.updated", "rate_limits": []})
    assert mirror.version == before  # not a change of the conversation
    mirror.observe({"type": "input_audio_buffer.speech_stopped", "item_id": "item_1"})
    assert not mirror.speaking and mirror.version == before + 1


def test_out_of_band_response_is_not_carried() -> None:
    up = Upstream()
    add_user_text(up.conn, "hello", "item_h")
    up.feed([])
    up.mirror.observe(
        {
            "type": "conversation.item.added",
            "item": _user("hello", "item_h"),
            "previous_item_id": None,
        }
    )
    rid = start_response(up.conn, conversation="none").response_id
    up.mirror.observe(
        {"type": "response.created", "response": {"id": rid, "conversation_id": None}}
    )
    up.feed(up.conn.response_text(rid, "classified"))
    up.feed(up.conn.response_message_done(rid))
    up.feed(up.conn.finish_response(rid))
    assert texts(up.mirror.items()) == ["hello"]


def test_seeded_connection_continues_the_conversation() -> None:
    up = Upstream()
    up.feed(update(up.conn, instructions="Speak like a pirate.", output_modalities=["audio"]))
    up.feed(update(up.conn, audio={"output": {"voice": "marin"}}))
    up.feed(send(up.conn, "conversation.item.create", item=_user("My name is Ada.", "item_a")))
    reply = up.reply(["Ahoy ", "Ada!"])
    spoken_turn(up, "What is my name?")

    local = RealtimeConnection(model="embedded")
    dropped, owed = seed_connection(local, up.mirror, model="voxgate-local")
    assert dropped == [] and owed == []  # every user turn has its transcript
    assert local.config.instructions == "Speak like a pirate."
    assert local.config.voice == "marin"
    assert local.config.model == "voxgate-local"
    # The voice stays: assistant audio exists, as upstream.
    assert local.audio_produced and local.model_locked
    plan = start_response(local)
    messages = chat_messages(plan.context)
    said = [m["content"] for m in messages]
    assert said == ["My name is Ada.", "Ahoy Ada!", "What is my name?"]
    # The assistant item still has its audio: a barge-in can truncate it.
    out = send(local, "conversation.item.truncate", item_id=reply, content_index=0, audio_end_ms=40)
    assert types(events(out)) == ["conversation.item.truncated"]


def test_seeding_skips_settings_the_local_pipeline_refuses() -> None:
    mirror = ConversationMirror()
    mirror.observe(
        {
            "type": "session.created",
            "session": {
                "id": "sess_up",
                "type": "realtime",
                "instructions": "Be brief.",
                # A hosted connector: the embedded pipeline only reaches MCP servers by URL.
                "tools": [{"type": "mcp", "server_label": "x", "connector_id": "connector_gmail"}],
            },
        }
    )
    local = RealtimeConnection()
    dropped, _ = seed_connection(local, mirror)
    assert dropped == ["tools"]
    assert local.config.instructions == "Be brief."


def test_replay_recreates_the_conversation_as_text() -> None:
    up = Upstream()
    up.feed(update(up.conn, instructions="Be a pirate."))
    up.feed(send(up.conn, "conversation.item.create", item=_user("My name is Ada.", "item_a")))
    up.reply(["Ahoy ", "Ada!"])
    spoken_turn(up, "What is my name?")

    fresh = started()
    replay = replay_events(up.mirror)
    assert replay[0]["type"] == "session.update"
    for event in replay:
        out = fresh.receive(json.dumps(event))
        assert "error" not in types(events(out)), events(out)
    assert fresh.config.instructions == "Be a pirate."
    assert [i.id for i in fresh.conversation] == [i.id for i in up.conn.conversation]
    assert texts(list(fresh.conversation)) == [
        "My name is Ada.",
        "Ahoy Ada!",
        "What is my name?",
    ]
    assert isinstance(next(iter(fresh.conversation)), UserMessage)


def test_replay_summarises_the_oldest_items_past_the_bound() -> None:
    up = Upstream()
    for n in range(40):
        up.feed(send(up.conn, "conversation.item.create", item=_user(f"fact {n}: " + "word " * 50)))
        up.reply([f"noted {n}."], audio=False)
    replay = replay_events(up.mirror, max_chars=3000, summary_chars=1000)
    items = [e["item"] for e in replay[1:]]
    summary = items[0]
    assert summary["role"] == "system"
    text = summary["content"][0]["text"]
    assert text.startswith(carry.SUMMARY_HEADER) and len(text) <= 1000
    # The newest past the bound are summarised first; the very oldest are dropped.
    kept = [item_text(_parse(i)) for i in items[1:]]
    assert kept[-1] == "noted 39."
    assert sum(len(t) for t in kept) <= 3000
    first_kept_fact = int(next(t for t in kept if t.startswith("fact")).split()[1].rstrip(":"))
    assert f"fact {first_kept_fact - 1}:" in text
    assert "fact 0:" not in text
    fresh = started()
    for event in replay:
        assert "error" not in types(events(fresh.receive(json.dumps(event))))


def test_replay_never_separates_a_tool_result_from_its_call() -> None:
    mirror = ConversationMirror()
    call = {
        "type": "function_call",
        "id": "item_c",
        "call_id": "c1",
        "name": "f",
        "arguments": "{}",
    }
    output = {"type": "function_call_output", "id": "item_o", "call_id": "c1", "output": "x" * 50}
    for raw in (call, output, _user("after", "item_u")):
        mirror.observe({"type": "conversation.item.added", "item": raw})
    replay = replay_events(mirror, max_chars=60)
    created = [e["item"].get("id") for e in replay[1:]]
    assert created[1:] == ["item_u"]  # the call and its output both went to the summary
    fresh = started()
    for event in replay:
        assert "error" not in types(events(fresh.receive(json.dumps(event))))


def test_assistant_text_reply_is_mirrored() -> None:
    up = Upstream()
    up.feed(update(up.conn, output_modalities=["text"]))
    up.reply(["plain ", "text"], audio=False)
    (item,) = up.mirror.items()
    assert isinstance(item, AssistantMessage)
    assert item_text(item) == "plain text"


# -- the user's audio, for turns without a transcript ------------------------------------------


def tone(ms: int, level: int) -> bytes:
    """``ms`` of 24 kHz PCM16 at a constant level: each stretch of a test recognisable."""
    return level.to_bytes(2, "little", signed=True) * (24 * ms)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


def test_a_detected_turn_keeps_the_audio_the_upstream_committed() -> None:
    up = Upstream(transcripts=False)
    up.client("input_audio_buffer.append", audio=b64(tone(1000, 0)))
    up.client("input_audio_buffer.append", audio=b64(tone(1500, 700)))
    up.client("input_audio_buffer.append", audio=b64(tone(500, 0)))
    # The upstream's detector: speech from 700 ms (prefix padding included) to 2600 ms.
    up.feed(up.conn.speech_started("item_v", 700))
    up.feed(up.conn.speech_stopped("item_v", 700, 2600))
    kept = up.mirror.user_audio.audio_of("item_v")
    assert kept is not None
    assert kept == (bytes(up.conn.conversation.audio["item_v"]), "audio/pcm")
    assert len(kept[0]) == 1900 * 48 and kept[0].count(tone(1, 700)) == 1500


def test_client_commits_are_answered_in_order() -> None:
    up = Upstream(transcripts=False)
    up.feed(update(up.conn, audio={"input": {"turn_detection": None}}))
    first, second = tone(400, 100), tone(300, 200)
    # Both commits are written before the upstream answers the first.
    for audio in (first, second):
        up.mirror.user_audio.written(audio, "audio/pcm")
        up.mirror.user_audio.commit_written()
    up.feed(send(up.conn, "input_audio_buffer.append", audio=b64(first)))
    up.feed(up.conn.commit("item_1"))
    up.feed(send(up.conn, "input_audio_buffer.append", audio=b64(second)))
    up.feed(up.conn.commit("item_2"))
    assert up.mirror.user_audio.audio_of("item_1") == (first, "audio/pcm")
    assert up.mirror.user_audio.audio_of("item_2") == (second, "audio/pcm")


def test_a_cleared_buffer_is_not_part_of_the_next_turn() -> None:
    up = Upstream(transcripts=False)
    up.client(
        "session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    )
    up.client("input_audio_buffer.append", audio=b64(tone(300, 5)))
    up.client("input_audio_buffer.clear")
    up.client("input_audio_buffer.append", audio=b64(tone(200, 9)))
    committed = up.client("input_audio_buffer.commit")
    item_id = next(e["item_id"] for e in committed if e["type"].endswith("committed"))
    assert up.mirror.user_audio.audio_of(item_id) == (tone(200, 9), "audio/pcm")


def test_items_audio_is_trimmed_oldest_first_within_the_budget() -> None:
    audio = UserAudio(max_bytes=2 * 48_000, listening=False)
    for n in range(3):
        audio.written(tone(1000, n + 1), "audio/pcm")  # 48,000 bytes a turn
        audio.commit_written()
        audio.committed(f"item_{n}")
    assert audio.audio_of("item_0") is None  # the oldest went first
    assert audio.audio_of("item_1") == (tone(1000, 2), "audio/pcm")
    assert audio.audio_of("item_2") == (tone(1000, 3), "audio/pcm")
    # A single turn over the budget is still kept: the newest item's audio never goes.
    audio.written(tone(3000, 4), "audio/pcm")
    audio.commit_written()
    audio.committed("item_3")
    assert [audio.audio_of(f"item_{n}") is None for n in range(4)] == [True, True, True, False]
    audio.forget("item_3")
    assert audio.kept_bytes == 0


def test_silence_between_detected_turns_is_not_kept() -> None:
    audio = UserAudio()
    for _ in range(300):  # 30 s of silence, 100 ms at a time, nobody speaking
        audio.written(tone(100, 0), "audio/pcm")
    assert audio.kept_bytes <= (IDLE_KEEP_MS + 1000) * 48
    # A turn under way keeps its start, however long it grows.
    audio.speech_started("item_s", 29_800)
    for _ in range(100):
        audio.written(tone(100, 3), "audio/pcm")
    audio.speech_ended("item_s", 40_000)
    audio.committed("item_s")
    kept = audio.audio_of("item_s")
    assert kept is not None and len(kept[0]) == 10_200 * 48


def test_each_upstream_session_counts_its_audio_from_its_start() -> None:
    audio = UserAudio()
    audio.written(tone(2000, 1), "audio/pcm")  # heard by the first upstream session
    audio.link_opened()  # a renewal: the next session's ms count from here
    audio.written(tone(1000, 2), "audio/pcm")
    audio.speech_started("item_n", 0)
    audio.speech_ended("item_n", 1000)
    audio.committed("item_n")
    assert audio.audio_of("item_n") == (tone(1000, 2), "audio/pcm")


def spoken_untranscribed(up: Upstream) -> tuple[str, bytes]:
    """A user turn, detected upstream, whose transcript the client never asked for."""
    speech = tone(800, 1234)
    detection = {"type": "server_vad", "create_response": False}
    up.feed(update(up.conn, audio={"input": {"turn_detection": detection}}))
    up.client("input_audio_buffer.append", audio=b64(speech))
    up.feed(up.conn.speech_started("item_spoken", 0))
    up.feed(up.conn.speech_stopped("item_spoken", 0, 800))
    return "item_spoken", speech


def test_pipeline_is_asked_to_transcribe_turns_without_a_transcript() -> None:
    up = Upstream(transcripts=False)
    up.feed(send(up.conn, "conversation.item.create", item=_user("Hello.", "item_t")))
    item_id, speech = spoken_untranscribed(up)
    local = RealtimeConnection(model="embedded")
    _, owed = seed_connection(local, up.mirror)
    assert owed == [TranscribeItem(item_id, speech, "audio/pcm")]
    assert bytes(local.conversation.audio[item_id]) == speech
    # Once the pipeline's recogniser answers, the language model hears the words.
    local.transcription_done(item_id, "my number is five", 0.8)
    said = [m["content"] for m in chat_messages(start_response(local).context)]
    assert said == ["Hello.", "my number is five"]


def test_a_turn_with_the_upstreams_transcript_is_not_transcribed_again() -> None:
    up = Upstream(transcripts=True)
    item_id, _ = spoken_untranscribed(up)
    up.feed(up.conn.transcription_done(item_id, "as the upstream heard it", 0.8))
    local = RealtimeConnection()
    _, owed = seed_connection(local, up.mirror)
    assert owed == []
    assert texts(list(local.conversation)) == ["as the upstream heard it"]
    assert "audio" not in json.dumps(replay_events(up.mirror)[1:])


def test_replay_gives_a_turn_without_a_transcript_as_its_audio() -> None:
    up = Upstream(transcripts=False)
    item_id, speech = spoken_untranscribed(up)
    up.reply(["Noted."], audio=False)
    # 800 ms of audio is 51,200 characters of base64: not text, so nothing is summarised.
    replay = replay_events(up.mirror, max_chars=300)
    assert [e["item"]["id"] for e in replay[1:]] == [item_id, up.mirror.items()[1].id]
    fresh = started()
    out: list[Output] = []
    for event in replay:
        out += fresh.receive(json.dumps(event))
    assert "error" not in types(events(out))
    # The fresh session hears the turn as it was said (it transcribes it as its own).
    assert TranscribeItem(item_id, speech, "audio/pcm") in out


def _user(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return item


def _parse(raw: dict[str, Any]) -> Any:
    from voxgate.protocol.items import parse_item

    return parse_item(raw)
