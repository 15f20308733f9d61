"""The server-played side of a relayed session (WebRTC): what the upstream's audio events
become when voxgate plays the audio itself. `MediaBridge` (``protocol/relay_media.py``)
keeps the books; this turns its decisions into a driver's outputs — playout commands and the
``output_audio_buffer.*`` events voxgate makes.

Bound: the upstream cannot be made to wait for the playout as the embedded pipeline's
responses wait (pausing the reader would hold a barge-in's ``speech_started`` behind the audio
ahead of it). So once the playout holds `playout.MAX_QUEUED_S` of audio, the rest of the reply
arriving then is not played (what was queued of it plays out, then ``stopped`` as usual): a
warning in the log, and its seconds go to ``dropped`` (the metric
``voxgate_relay_audio_dropped_seconds_total``)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

from ..audio import AudioFormat
from ..protocol.commands import ClearOutputAudio, EndOfAudio, PlayAudio
from ..protocol.connection import RealtimeConnection
from ..protocol.relay_media import MediaBridge
from .driver import DriverOutput, Forward
from .transport import PlayoutCut

log = logging.getLogger(__name__)
# Reply audio not played past the playout's bound: (upstream name, seconds).
AudioDropped = Callable[[str, float], None]


def made(event: dict[str, Any]) -> Forward:
    """A server event voxgate makes in the relayed stream (not the upstream's)."""
    return Forward(json.dumps(event), str(event["type"]))


class RelayPlayout:
    def __init__(self, upstream: str = "", dropped: AudioDropped | None = None) -> None:
        self._media: MediaBridge | None = None
        self._upstream = upstream
        self._dropped = dropped
        # Responses muted at the bound, until their audio is done.
        self._over: set[str] = set()

    def _of(self, conn: RealtimeConnection) -> MediaBridge:
        if self._media is None:  # what plays is the connection's: it outlives this driver
            self._media = MediaBridge(conn.playing)
        return self._media

    def upstream(
        self,
        conn: RealtimeConnection,
        data: dict[str, Any],
        forward: Forward,
        full: Callable[[], bool] = lambda: False,
    ) -> list[DriverOutput] | None:
        """What an upstream event does to the playout (it replaces passing it on); None when
        it is not the playout's concern. ``full``: the playout is at its bound."""
        rid = forward.response_id
        match forward.type:
            case "response.output_audio.delta":
                return self._play(conn, data, rid or "", full)
            case "response.output_audio.done" if rid:
                self._over.discard(rid)
                return [forward, EndOfAudio(rid)] if self._of(conn).audio_done(rid) else None
            case "input_audio_buffer.speech_started":
                # Barge-in: what plays stops; `cut` then truncates the item upstream.
                return [forward, ClearOutputAudio(None)] if self._of(conn).barge_in() else None
        return None

    def _play(
        self, conn: RealtimeConnection, data: dict[str, Any], rid: str, full: Callable[[], bool]
    ) -> list[DriverOutput]:
        media = self._of(conn)
        audio = base64.b64decode(str(data.get("delta") or ""))
        fmt = conn.config.audio.output.format.type
        if rid not in self._over and full():
            log.warning(
                "session %s: the playout holds all it may; the rest of reply %s from upstream "
                "%s is not played",
                conn.session_id,
                rid,
                self._upstream,
            )
            self._over.add(rid)
            media.mute(rid)
        if rid in self._over:
            if self._dropped is not None:
                f = AudioFormat.from_type(fmt)
                self._dropped(self._upstream, len(audio) / (f.rate * f.bytes_per_sample))
            return []
        play, started = media.audio(rid)
        if not play:  # a response cut short: its audio still arriving goes unheard
            return []
        out: list[DriverOutput] = [made(started)] if started is not None else []
        item_id, index = str(data.get("item_id") or ""), int(data.get("content_index") or 0)
        return [*out, PlayAudio(rid, item_id, index, audio, fmt)]

    def ended(self, conn: RealtimeConnection, response_id: str) -> list[DriverOutput]:
        """A response ended (``response.done``, or voxgate ended it: a lost upstream, a
        cancel): its playout gets no more audio, so once played it stops. Nothing when its
        audio was complete already or never played."""
        self._over.discard(response_id)
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
