"""Carrying a conversation from one engine to another (failover, renewal), sans-IO.

A relayed session's conversation lives upstream; voxgate sees it only as the upstream's
server events. `ConversationMirror` rebuilds it from those events — items in order, the
session configuration, what is being said right now — so that when the upstream fails or
must be renewed the conversation can go on elsewhere:

- `seed_connection` fills a local `RealtimeConnection` with the items and the configuration,
  for the embedded pipeline to continue (audio items become their transcripts: the language
  model hears users through transcripts anyway);
- `replay_events` is what a fresh upstream session is sent: one ``session.update`` and one
  ``conversation.item.create`` per item, as text (an upstream cannot be handed assistant audio).
  Past `REPLAY_MAX_CHARS` of text, the oldest items are folded into one summary item of at
  most `SUMMARY_MAX_CHARS` (docs/relay.md states both);
- `cut` marks what the failed upstream left unfinished as incomplete;
- ``user_audio`` (`user_audio.py`) keeps the audio of the user's committed turns: one whose
  transcript the upstream never gave (input transcription off) is carried as audio, for the
  pipeline to transcribe and a fresh upstream to hear.

Rules kept here:
- items are keyed by the upstream's ids; ``previous_item_id`` places them as upstream did;
- the latest event about an item wins (``added`` < ``done``; transcripts fill in later);
- a truncation keeps the transcript words whose audio was heard (marks by audio position, as
  the local conversation does);
- only the newest assistant item keeps its audio bytes (so it can still be truncated after a
  failover); older ones keep their words only — bounded memory per session.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .audio_items import needs_transcript
from .audio_math import ms_to_bytes
from .commands import TranscribeItem
from .connection import RealtimeConnection
from .errors import ProtocolError
from .ids import new_id
from .items import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputImage,
    Item,
    OutputAudio,
    UserMessage,
    item_text,
)
from .mcp_items import McpCall, McpItem
from .user_audio import UserAudio
from .wire_items import append_words, has_words, item_from_wire, keep_words

# Replayed text beyond this is summarised (the oldest items first): about 8k tokens, well
# inside any Realtime model's context and quick to send.
REPLAY_MAX_CHARS = 32_000
# The summary of the older items: each keeps its opening words, oldest dropped first.
SUMMARY_MAX_CHARS = 4_000
SUMMARY_WORDS_PER_ITEM = 24
SUMMARY_HEADER = "Summary of the earlier part of this conversation (older turns, shortened):"
_TURN_ENDS = (
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.timeout_triggered",
)
# Session fields that belong to one upstream session, not to the conversation's settings.
_NOT_CARRIED = ("id", "object", "expires_at", "client_secret")


def session_patch(session: Mapping[str, Any]) -> dict[str, Any]:
    """A session object as an engine reports it, as a ``session.update`` body (what another
    engine, or a check, can apply)."""
    body = {k: copy.deepcopy(v) for k, v in session.items() if k not in _NOT_CARRIED}
    body.setdefault("type", "realtime")
    return body


@dataclass
class _Speech:
    """Assistant audio of one item: its bytes and where each transcript piece began."""

    format: str
    audio: bytearray = field(default_factory=bytearray)
    marks: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class ConversationMirror:
    """The upstream's conversation and session, as its server events describe them."""

    session: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    _order: list[str] = field(default_factory=list)
    _items: dict[str, Item] = field(default_factory=dict)
    # Responses created and not yet done: response id → output item ids so far.
    open_responses: dict[str, list[str]] = field(default_factory=dict)
    audio_produced: bool = False
    responded: bool = False
    _speech: dict[str, _Speech] = field(default_factory=dict)
    _out_of_band: set[str] = field(default_factory=set)
    # The user is speaking (between the upstream's speech_started and the end of the turn).
    speaking: bool = False
    # Moves with every event that may change the conversation or the configuration: a
    # replay made at one version is stale at another.
    version: int = 0
    # The user's audio as written upstream, and of each committed turn.
    user_audio: UserAudio = field(default_factory=UserAudio)

    # -- reading upstream events ---------------------------------------------------------

    def observe(self, event: Mapping[str, Any]) -> None:
        """Take one upstream server event (as parsed JSON) into account."""
        kind = event.get("type")
        if kind != "rate_limits.updated":
            self.version += 1
        if kind == "input_audio_buffer.speech_started":
            self.speaking = True
        elif kind in _TURN_ENDS:
            self.speaking = False
        if isinstance(kind, str) and kind.startswith(("input_audio_buffer.", "conversation.")):
            self.user_audio.observe(event)
        if kind in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                self.session = copy.deepcopy(session)
                self.session_id = session.get("id", self.session_id)
                detection = _input(self.session).get("turn_detection", "server_vad")
                self.user_audio.listening = detection is not None
        elif kind in ("conversation.item.added", "conversation.item.created"):
            self._place(event.get("item"), _previous(event))
        elif kind == "conversation.item.done":
            self._place(event.get("item"), _previous(event), update=True)
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if event.get("response_id") not in self._out_of_band:
                self._place(event.get("item"), None, update=kind.endswith("done"))
                self._output_item(event)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._transcript(event)
        elif kind == "conversation.item.deleted":
            self._delete(str(event.get("item_id")))
        elif kind == "conversation.item.truncated":
            self._truncate(event)
        elif kind == "response.created":
            self._response_created(event)
        elif kind == "response.done":
            self._response_done(event)
        elif kind in ("response.output_audio.delta", "response.audio.delta"):
            self._audio(event)
        elif kind in (
            "response.output_audio_transcript.delta",
            "response.audio_transcript.delta",
            "response.output_text.delta",
            "response.text.delta",
        ):
            self._words(event)

    def _place(self, raw: Any, previous: Any, *, update: bool = False) -> None:
        item = item_from_wire(raw)
        if item is None or item.id is None:
            return
        if item.id in self._items:
            if update or not has_words(self._items[item.id]):
                self._items[item.id] = keep_words(self._items[item.id], item)
            return
        self._items[item.id] = item
        if isinstance(previous, str) and previous in self._items:
            self._order.insert(self._order.index(previous) + 1, item.id)
        elif previous == "root":
            self._order.insert(0, item.id)
        else:  # last (also when placed after an item we never saw)
            self._order.append(item.id)

    def _output_item(self, event: Mapping[str, Any]) -> None:
        rid, item = event.get("response_id"), event.get("item")
        if isinstance(rid, str) and isinstance(item, dict) and rid in self.open_responses:
            ids = self.open_responses[rid]
            if item.get("id") not in ids:
                ids.append(str(item.get("id")))

    def _response_created(self, event: Mapping[str, Any]) -> None:
        response = event.get("response") or {}
        rid = response.get("id")
        if not isinstance(rid, str):
            return
        self.open_responses[rid] = []
        self.responded = True
        if "conversation_id" in response and response["conversation_id"] is None:
            self._out_of_band.add(rid)

    def _response_done(self, event: Mapping[str, Any]) -> None:
        response = event.get("response") or {}
        rid = str(response.get("id"))
        self.open_responses.pop(rid, None)
        if rid in self._out_of_band:
            self._out_of_band.discard(rid)
            return  # its items are not in the conversation
        for raw in response.get("output") or []:
            self._place(raw, None, update=True)

    def _transcript(self, event: Mapping[str, Any]) -> None:
        item = self._items.get(str(event.get("item_id")))
        if not isinstance(item, UserMessage):
            return
        index = event.get("content_index", 0)
        audio_parts = [p for p in item.content if isinstance(p, InputAudio)]
        parts = item.content
        target = parts[index] if isinstance(index, int) and index < len(parts) else None
        if not isinstance(target, InputAudio):
            target = audio_parts[0] if audio_parts else None
        if target is not None:
            target.transcript = str(event.get("transcript") or "")

    def _delete(self, item_id: str) -> None:
        if item_id in self._items:
            del self._items[item_id]
            self._order.remove(item_id)
        self._speech.pop(item_id, None)

    def _audio(self, event: Mapping[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        try:
            data = base64.b64decode(str(event.get("delta") or ""), validate=True)
        except (binascii.Error, ValueError):
            return
        self.audio_produced = True
        self._speech_of(item_id).audio.extend(data)

    def _words(self, event: Mapping[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        delta = str(event.get("delta") or "")
        audio = "audio" in str(event.get("type"))
        if audio:
            speech = self._speech_of(item_id)
            speech.marks.append((len(speech.audio), delta))
        item = self._items.get(item_id)
        if isinstance(item, AssistantMessage):
            append_words(item, delta, audio=audio)

    def _speech_of(self, item_id: str) -> _Speech:
        speech = self._speech.get(item_id)
        if speech is None:
            # Only the newest assistant item keeps its audio: see the module's rules.
            self._speech.clear()
            speech = self._speech[item_id] = _Speech(self._output_format())
        return speech

    def input_format(self) -> str:
        fmt = _input(self.session).get("format", {})
        return str(fmt.get("type", "audio/pcm")) if isinstance(fmt, dict) else "audio/pcm"

    def _output_format(self) -> str:
        fmt = self.session.get("audio", {}).get("output", {}).get("format", {})
        return str(fmt.get("type", "audio/pcm")) if isinstance(fmt, dict) else "audio/pcm"

    def _truncate(self, event: Mapping[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        item = self._items.get(item_id)
        speech = self._speech.get(item_id)
        if not isinstance(item, AssistantMessage):
            return
        heard = ""
        if speech is not None:
            cut = ms_to_bytes(speech.format, int(event.get("audio_end_ms") or 0))
            del speech.audio[cut:]
            heard = "".join(text for at, text in speech.marks if at < cut)
        for part in item.content:
            if isinstance(part, OutputAudio):
                part.transcript = heard

    # -- what the mirror holds ------------------------------------------------------------

    def items(self) -> list[Item]:
        """The conversation, in order (copies: the caller may keep or change them)."""
        return [self._items[i].model_copy(deep=True) for i in self._order]

    def config_patch(self) -> dict[str, Any]:
        """The session configuration as a ``session.update`` body for another engine."""
        return session_patch(self.session)

    def speech_of(self, item_id: str) -> tuple[bytes, str, list[tuple[int, str]]] | None:
        """The kept audio of an assistant item: bytes, format, transcript marks."""
        speech = self._speech.get(item_id)
        if speech is None or not speech.audio:
            return None
        return bytes(speech.audio), speech.format, list(speech.marks)

    def cut(self, response_ids: Iterable[str]) -> None:
        """Responses the upstream will never finish (it failed): their items stay, as far as
        they got, marked incomplete; nothing counts as open any more."""
        for rid in response_ids:
            for item_id in self.open_responses.get(rid, []):
                if (item := self._items.get(item_id)) is not None:
                    item.status = "incomplete"
        self.open_responses.clear()
        self.speaking = False


def _input(session: Mapping[str, Any]) -> dict[str, Any]:
    audio = session.get("audio")
    inp = audio.get("input") if isinstance(audio, dict) else None
    return inp if isinstance(inp, dict) else {}


def _previous(event: Mapping[str, Any]) -> Any:
    """Where a conversation event places its item: a null ``previous_item_id`` means the item
    has no predecessor (first); an event without the field says nothing (last)."""
    if "previous_item_id" in event and event["previous_item_id"] is None:
        return "root"
    return event.get("previous_item_id")


# -- (a) the embedded pipeline takes over ----------------------------------------------------


def seed_connection(
    conn: RealtimeConnection, mirror: ConversationMirror, *, model: str | None = None
) -> tuple[list[str], list[TranscribeItem]]:
    """Give a fresh local connection the mirrored configuration and conversation, so the
    embedded pipeline answers the next turn knowing everything said so far. ``model`` names
    the engine now serving the session. Returns the configuration fields that could not be
    carried (settings the local pipeline refuses; the rest still apply), and the user turns
    the pipeline must transcribe (kept audio, no transcript), newest first: a response waits
    for those words, and the newest matter most if the recogniser cannot take them all."""
    patch = mirror.config_patch()
    patch.pop("model", None)  # the engine now serving names it (not a client's change)
    dropped = _configure_what_fits(conn, patch)
    if model is not None:
        conn.config = conn.config.model_copy(update={"model": model})
    owed: list[TranscribeItem] = []
    for item in mirror.items():
        assert item.id is not None
        conn.conversation.insert(item)
        heard = mirror.user_audio.audio_of(item.id)
        if heard is not None and needs_transcript(item):
            conn.conversation.audio[item.id] = bytearray(heard[0])
            owed.insert(0, TranscribeItem(item.id, heard[0], heard[1]))
        kept = mirror.speech_of(item.id)
        if kept is not None:
            audio, fmt, marks = kept
            conn.conversation.audio[item.id] = bytearray(audio)
            conn.conversation.audio_format[item.id] = fmt
            conn.conversation.marks[item.id] = marks
    conn.budget.trim_audio(conn.conversation)
    conn.audio_produced = mirror.audio_produced
    conn.model_locked = mirror.responded
    return dropped, owed


def _configure_what_fits(conn: RealtimeConnection, patch: dict[str, Any]) -> list[str]:
    """Apply ``patch`` whole if possible, else without the top-level fields that fail."""
    dropped: list[str] = []
    while True:
        try:
            conn.configure(patch)
            return dropped
        except ProtocolError as exc:
            field_name = (exc.param or "").removeprefix("session.").split(".")[0].split("[")[0]
            if field_name not in patch or field_name in ("type", ""):
                return [*dropped, *[k for k in patch if k != "type"]]  # nothing fits
            dropped.append(field_name)
            patch = {k: v for k, v in patch.items() if k != field_name}


# -- (b) a fresh upstream session takes over -------------------------------------------------


def replay_events(
    mirror: ConversationMirror,
    *,
    max_chars: int = REPLAY_MAX_CHARS,
    summary_chars: int = SUMMARY_MAX_CHARS,
) -> list[dict[str, Any]]:
    """Client events that give a new upstream session this conversation: the configuration,
    then each item as text (ids kept, so the client's later references still resolve). When
    the items' text passes ``max_chars``, the oldest become one summary item first."""
    events: list[dict[str, Any]] = [{"type": "session.update", "session": mirror.config_patch()}]
    items = [
        (item, wire)
        for item in mirror.items()
        if (wire := _replay_item(item, _heard(mirror, item)))
    ]
    kept_from = len(items)
    total = 0
    while kept_from > 0 and total + _size(items[kept_from - 1][1]) <= max_chars:
        kept_from -= 1
        total += _size(items[kept_from][1])
    # A tool result never goes without its call: it joins the summary with it.
    while kept_from < len(items) and items[kept_from][0].type == "function_call_output":
        kept_from += 1
    if kept_from > 0:
        summary = summarise([item for item, _ in items[:kept_from]], summary_chars)
        events.append({"type": "conversation.item.create", "item": summary})
    events += [{"type": "conversation.item.create", "item": wire} for _, wire in items[kept_from:]]
    return events


def _heard(mirror: ConversationMirror, item: Item) -> str | None:
    """A user turn's kept audio (base64) where no transcript stands for it, in the input
    format the replayed configuration sets (audio in another format cannot be given)."""
    if item.id is None or not needs_transcript(item):
        return None
    heard = mirror.user_audio.audio_of(item.id)
    if heard is None or heard[1] != mirror.input_format():
        return None
    return base64.b64encode(heard[0]).decode("ascii")


def _replay_item(item: Item, audio: str | None = None) -> dict[str, Any] | None:
    """The item as a client may create it: audio parts become text, or ``audio`` (a user turn
    without a transcript); None if it says nothing."""
    common = {"id": item.id} if item.id else {}
    if isinstance(item, McpCall):  # clients cannot create MCP items: its outcome, as text
        text = f"MCP tool {item.server_label}.{item.name}({item.arguments}) gave: " + (
            item.output if item.output is not None else f"error: {item.error}"
        )
        return {
            **common,
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": text}],
        }
    if isinstance(item, McpItem):  # listings and approvals: server-made, nothing to say
        return None
    if isinstance(item, (FunctionCall, FunctionCallOutput)):
        body = item.model_dump(mode="json", exclude_none=True, exclude={"id", "status", "object"})
        return {**common, **body}
    words = item_text(item)
    if isinstance(item, AssistantMessage):
        if not words:
            return None
        content: list[dict[str, Any]] = [{"type": "output_text", "text": words}]
    elif isinstance(item, UserMessage):
        content = [
            {"type": "input_image", "image_url": p.image_url}
            for p in item.content
            if isinstance(p, InputImage)
        ]
        if words:
            content.insert(0, {"type": "input_text", "text": words})
        if audio:
            content.insert(0, {"type": "input_audio", "audio": audio})
        if not content:
            return None
    else:
        content = [{"type": "input_text", "text": words}]
    return {**common, "type": "message", "role": item.role, "content": content}


def _size(wire: dict[str, Any]) -> int:
    return sum(len(str(v)) for v in _strings(wire))


def _strings(value: Any) -> list[str]:
    """The text of a wire item (its audio, bounded by the mirror's budget, is not text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k != "audio" for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def summarise(items: list[Item], max_chars: int = SUMMARY_MAX_CHARS) -> dict[str, Any]:
    """One system item standing for ``items``: who said what, each turn's opening words,
    newest kept when it must be cut (the recent past matters most to what comes next)."""
    lines: list[str] = []
    budget = max_chars - len(SUMMARY_HEADER)
    for item in reversed(items):
        line = _summary_line(item)
        if not line:
            continue
        if len(line) + 1 > budget:
            break
        lines.append(line)
        budget -= len(line) + 1
    text = "\n".join([SUMMARY_HEADER, *reversed(lines)])
    return {
        "id": new_id("item"),
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": text}],
    }


def _summary_line(item: Item) -> str:
    if isinstance(item, FunctionCall):
        who, words = f"tool call {item.name}", item.arguments
    elif isinstance(item, FunctionCallOutput):
        who, words = "tool result", item.output
    elif isinstance(item, McpCall):
        who, words = f"tool call {item.name}", item.output or ""
    elif isinstance(item, McpItem):
        return ""
    else:
        who, words = item.role, item_text(item)
    split = words.split()
    if not split:
        return ""
    short = " ".join(split[:SUMMARY_WORDS_PER_ITEM])
    return f"- {who}: {short}{' …' if len(split) > SUMMARY_WORDS_PER_ITEM else ''}"
