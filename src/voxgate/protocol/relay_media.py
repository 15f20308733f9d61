"""The media half of relaying a WebRTC (or any server-played) client to an upstream Realtime
service, sans-IO.

Upstream, voxgate is an ordinary WebSocket client: it appends microphone audio and receives
audio deltas. The client, though, hears a media track that voxgate plays, so the parts of
the protocol that belong to the party playing the audio are voxgate's:

- the microphone's 24 kHz PCM16 goes upstream as ``input_audio_buffer.append``;
- ``response.output_audio.delta`` is not passed on: its audio is played (`PlayAudio`), and
  the first audio of a response is announced with ``output_audio_buffer.started``;
- when a response is done, its audio ends (`EndOfAudio`); once played,
  ``output_audio_buffer.stopped``;
- barge-in (the upstream's ``input_audio_buffer.speech_started`` while audio plays) and the
  client's ``output_audio_buffer.clear`` stop the playout (`ClearOutputAudio`); where it was
  cut, the upstream's item is truncated to what was heard (``conversation.item.truncate``,
  which the upstream confirms with ``conversation.item.truncated``) and the client told
  ``output_audio_buffer.cleared``.

The upstream session's audio formats are pinned to 24 kHz PCM16 (what the media track
carries), whatever the client asks for.

Rules: every method returns what to do, in order: `Relay` (an event for the client, made
here), `Upstream` (a client event to send upstream) and the playout commands. Whether the
upstream event itself is passed on is the caller's (`passes`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .commands import ClearOutputAudio, EndOfAudio, PlayAudio
from .ids import new_id

PCM24K = {"type": "audio/pcm", "rate": 24000}


@dataclass(frozen=True, slots=True)
class Relay:
    """A server event for the client, made by voxgate."""

    event: dict[str, Any]

    @classmethod
    def buffer(cls, kind: str, response_id: str) -> Relay:
        """An ``output_audio_buffer.*`` event."""
        event = {"type": f"output_audio_buffer.{kind}", "event_id": new_id("event")}
        return cls({**event, "response_id": response_id})


@dataclass(frozen=True, slots=True)
class Upstream:
    """A client event for the upstream, made by voxgate."""

    event: dict[str, Any]


MediaOutput = Relay | Upstream | PlayAudio | EndOfAudio | ClearOutputAudio


@dataclass
class _Playing:
    item_id: str
    content_index: int
    done: bool = False


class MediaBridge:
    """One relayed session's media bookkeeping (see the module docstring)."""

    def __init__(self) -> None:
        # Responses whose audio is queued or playing, in the order they started.
        self.playing: dict[str, _Playing] = {}
        # Responses cut short whose response.done has not come yet: audio still on its way
        # from the upstream is not played.
        self._cut: set[str] = set()

    # -- client side ----------------------------------------------------------------------

    @staticmethod
    def microphone(pcm24k: bytes) -> Upstream:
        """Media-track audio as the upstream hears it."""
        audio = base64.b64encode(pcm24k).decode("ascii")
        return Upstream({"type": "input_audio_buffer.append", "audio": audio})

    @staticmethod
    def session_for_upstream(session: dict[str, Any]) -> dict[str, Any]:
        """A client's session configuration with the audio formats the media track carries
        (formats asked for by the client do not apply to a track)."""
        out = dict(session)
        audio = dict(out.get("audio") or {})
        for side in ("input", "output"):
            part = audio.get(side)
            audio[side] = {**(part if isinstance(part, dict) else {}), "format": dict(PCM24K)}
        out["audio"] = audio
        return out

    def client_clear(self) -> list[MediaOutput]:
        """The client's ``output_audio_buffer.clear``: stop what plays (voxgate's to do; the
        upstream has no output buffer to clear)."""
        return [ClearOutputAudio(None)] if self.playing else []

    # -- upstream side --------------------------------------------------------------------

    @staticmethod
    def passes(event_type: str) -> bool:
        """Whether an upstream event goes on to the client as it is."""
        return event_type not in ("response.output_audio.delta", "output_audio_buffer.started")

    def upstream(self, event: dict[str, Any]) -> list[MediaOutput]:
        """What an upstream server event asks of the playout."""
        match event.get("type"):
            case "response.output_audio.delta":
                return self._audio(event)
            case "response.done":
                rid = str((event.get("response") or {}).get("id") or "")
                self._cut.discard(rid)
                playing = self.playing.get(rid)
                if playing is None:
                    return []
                playing.done = True
                return [EndOfAudio(rid)]
            case "input_audio_buffer.speech_started":
                return [ClearOutputAudio(None)] if self.playing else []
        return []

    def _audio(self, event: dict[str, Any]) -> list[MediaOutput]:
        rid, item_id = str(event.get("response_id") or ""), str(event.get("item_id") or "")
        content_index = event.get("content_index")
        index = content_index if isinstance(content_index, int) else 0
        try:
            pcm = base64.b64decode(str(event.get("delta") or ""), validate=True)
        except ValueError:
            return []
        if rid in self._cut:
            return []
        out: list[MediaOutput] = []
        if rid not in self.playing:
            self.playing[rid] = _Playing(item_id, index)
            out.append(Relay.buffer("started", rid))
        out.append(PlayAudio(rid, item_id, index, pcm, "audio/pcm"))
        return out

    # -- playout side ---------------------------------------------------------------------

    def cleared(
        self, response_id: str, item_id: str, content_index: int, played_ms: int
    ) -> list[MediaOutput]:
        """Playout was cut: the upstream's item keeps only what was heard."""
        playing = self.playing.pop(response_id, None)
        if playing is not None and not playing.done:
            self._cut.add(response_id)
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": max(0, played_ms),
        }
        return [Upstream(truncate), Relay.buffer("cleared", response_id)]

    def stopped(self, response_id: str) -> list[MediaOutput]:
        """A finished response's audio has all played."""
        if self.playing.pop(response_id, None) is None:
            return []
        return [Relay.buffer("stopped", response_id)]
