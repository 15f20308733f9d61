"""The media half of relaying a WebRTC (or any server-played) client to an upstream Realtime
service, sans-IO.

Upstream, voxgate is an ordinary WebSocket client: it appends microphone audio and receives
audio deltas. The client, though, hears a media track that voxgate plays, so the parts of
the protocol that belong to the party playing the audio are voxgate's:

- an audio delta is played, not passed on; the first of a response is announced with
  ``output_audio_buffer.started``;
- once a response's audio is done and has played, ``output_audio_buffer.stopped``;
- barge-in (the upstream's ``input_audio_buffer.speech_started`` while audio plays) and the
  client's ``output_audio_buffer.clear`` stop the playout; where it was cut, the upstream's
  item is truncated to what was heard (``conversation.item.truncate``, which the upstream
  confirms with ``conversation.item.truncated``) and the client is told
  ``output_audio_buffer.cleared``. Audio of a cut response still arriving is not played.

`MediaBridge` keeps that state for one relayed session and says what to do; the relay
driver does it (plays, sends, passes events on). Which responses play is kept in the set it
is given, the session connection's ``playing``: a driver that takes over mid-session (a
failover, a renewal) — another relay or the embedded pipeline — knows what still plays.
"""

from __future__ import annotations

from typing import Any

from .ids import new_id

Event = dict[str, Any]


def buffer_event(kind: str, response_id: str) -> Event:
    """An ``output_audio_buffer.started|stopped|cleared`` event for the client."""
    return {
        "type": f"output_audio_buffer.{kind}",
        "event_id": new_id("event"),
        "response_id": response_id,
    }


class MediaBridge:
    """One relayed session's playout bookkeeping (see the module docstring)."""

    def __init__(self, playing: set[str]) -> None:
        # Responses whose audio is queued or playing (shared; see the module docstring), and
        # those of them whose audio has all arrived.
        self.playing = playing
        self._complete: set[str] = set()
        # Responses cut short whose audio may still be arriving: not played. Bounded: an
        # entry goes when the response's audio is done.
        self._cut: set[str] = set()

    def audio(self, response_id: str) -> tuple[bool, Event | None]:
        """An audio delta arrived: whether to play it, and the event announcing it (the
        first of its response)."""
        if response_id in self._cut:
            return False, None
        if response_id in self.playing:
            return True, None
        self.playing.add(response_id)
        return True, buffer_event("started", response_id)

    def audio_done(self, response_id: str) -> bool:
        """The response's audio is complete (its ``output_audio.done``, or the response
        ended): whether its playout is to be ended — once."""
        self._cut.discard(response_id)
        if response_id not in self.playing or response_id in self._complete:
            return False
        self._complete.add(response_id)
        return True

    def mute(self, response_id: str) -> None:
        """Play no more of the response (what is queued of it still plays out)."""
        self._cut.add(response_id)

    def barge_in(self) -> bool:
        """The user started speaking: whether the playout is to be cleared."""
        return bool(self.playing)

    def cut(
        self, response_id: str, item_id: str, content_index: int, played_ms: int
    ) -> tuple[Event, Event]:
        """The playout was cut: the truncation for the upstream, the event for the client."""
        if response_id in self.playing and response_id not in self._complete:
            self._cut.add(response_id)
        self.playing.discard(response_id)
        self._complete.discard(response_id)
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": max(0, played_ms),
        }
        return truncate, buffer_event("cleared", response_id)

    def stopped(self, response_id: str) -> Event | None:
        """A finished response's audio has all played: the event for the client, once."""
        self._complete.discard(response_id)
        if response_id not in self.playing:
            return None
        self.playing.discard(response_id)
        return buffer_event("stopped", response_id)
