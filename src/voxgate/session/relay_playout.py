"""The server-played side of a relayed session (WebRTC): what the upstream's audio events
become when voxgate plays the audio itself. `MediaBridge` (``protocol/relay_media.py``)
keeps the books; this turns its decisions into a driver's outputs — playout commands and the
``output_audio_buffer.*`` events voxgate makes."""

from __future__ import annotations

import base64
import json
from typing import Any

from ..protocol.commands import ClearOutputAudio, EndOfAudio, PlayAudio
from ..protocol.connection import RealtimeConnection
from ..protocol.relay_media import MediaBridge
from .driver import DriverOutput, Forward
from .transport import PlayoutCut


def made(event: dict[str, Any]) -> Forward:
    """A server event voxgate makes in the relayed stream (not the upstream's)."""
    return Forward(json.dumps(event), str(event["type"]))


class RelayPlayout:
    def __init__(self) -> None:
        self._media: MediaBridge | None = None

    def _of(self, conn: RealtimeConnection) -> MediaBridge:
        if self._media is None:  # what plays is the connection's: it outlives this driver
            self._media = MediaBridge(conn.playing)
        return self._media

    def upstream(
        self, conn: RealtimeConnection, data: dict[str, Any], forward: Forward
    ) -> list[DriverOutput] | None:
        """What an upstream event does to the playout (it replaces passing it on); None when
        it is not the playout's concern."""
        rid = forward.response_id
        match forward.type:
            case "response.output_audio.delta":
                return self._play(conn, data, rid or "")
            case "response.output_audio.done" if rid:
                return [forward, EndOfAudio(rid)] if self._of(conn).audio_done(rid) else None
            case "input_audio_buffer.speech_started":
                # Barge-in: what plays stops; `cut` then truncates the item upstream.
                return [forward, ClearOutputAudio(None)] if self._of(conn).barge_in() else None
        return None

    def _play(self, conn: RealtimeConnection, data: dict[str, Any], rid: str) -> list[DriverOutput]:
        play, started = self._of(conn).audio(rid)
        if not play:  # a response cut short: its audio still arriving goes unheard
            return []
        out: list[DriverOutput] = [made(started)] if started is not None else []
        audio = base64.b64decode(str(data.get("delta") or ""))
        fmt = conn.config.audio.output.format.type
        item_id, index = str(data.get("item_id") or ""), int(data.get("content_index") or 0)
        return [*out, PlayAudio(rid, item_id, index, audio, fmt)]

    def ended(self, conn: RealtimeConnection, response_id: str) -> list[DriverOutput]:
        """A response ended (``response.done``, or voxgate ended it: a lost upstream, a
        cancel): its playout gets no more audio, so once played it stops. Nothing when its
        audio was complete already or never played."""
        if not conn.server_playout or not self._of(conn).audio_done(response_id):
            return []
        return [EndOfAudio(response_id)]

    def cut(
        self, conn: RealtimeConnection, cut: PlayoutCut
    ) -> tuple[dict[str, Any], list[DriverOutput]]:
        """The truncation to send upstream (the user heard ``played_ms`` of the item), and
        the event for the client."""
        truncate, cleared = self._of(conn).cut(
            cut.response_id, cut.item_id, cut.content_index, cut.played_ms
        )
        return truncate, [made(cleared)]

    def stopped(self, conn: RealtimeConnection, response_id: str) -> list[DriverOutput]:
        stopped = self._of(conn).stopped(response_id)
        return [made(stopped)] if stopped is not None else []
