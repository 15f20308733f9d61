"""The Twilio playout on virtual time: what it sends, and that "played" is what Twilio
acknowledged with marks, not what was sent."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from voxgate.session.clock import VirtualClock
from voxgate.transports.twilio_playout import LEAD_S, MARK_EVERY_FRAMES, TwilioPlayout

SID = "MZ1"
FRAME = 160  # 20 ms of μ-law


class Wire:
    """What the playout sent, decoded; and the responses it reported as played."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.stopped: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def on_stopped(self, response_id: str) -> None:
        self.stopped.append(response_id)

    def kinds(self) -> list[str]:
        return [m["event"] for m in self.sent]

    def marks(self) -> list[str]:
        return [m["mark"]["name"] for m in self.sent if m["event"] == "mark"]

    def audio_before(self, mark: str) -> int:
        """Bytes of audio sent before the mark."""
        total = 0
        for m in self.sent:
            if m["event"] == "mark" and m["mark"]["name"] == mark:
                return total
            if m["event"] == "media":
                total += len(base64.b64decode(m["media"]["payload"]))
        raise AssertionError(f"no mark {mark}")


@pytest.fixture
async def rig() -> AsyncIterator[tuple[TwilioPlayout, Wire, VirtualClock]]:
    clock = VirtualClock()
    wire = Wire()
    playout = TwilioPlayout(SID, wire.send, clock)
    playout.bind(wire.on_stopped)
    task = asyncio.create_task(playout.run())
    yield playout, wire, clock
    playout.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_audio_goes_out_in_frames_a_little_ahead_of_playback_with_marks(
    rig: tuple[TwilioPlayout, Wire, VirtualClock],
) -> None:
    playout, wire, clock = rig
    playout.play("r1", "i1", 0, b"\x01" * 8000)  # one second
    playout.end("r1")
    await settle()
    # At once: the lead's worth, no more.
    media = [m for m in wire.sent if m["event"] == "media"]
    assert len(media) == round(LEAD_S / 0.02)
    assert all(m["streamSid"] == SID for m in wire.sent)
    assert all(len(base64.b64decode(m["media"]["payload"])) == FRAME for m in media)
    for _ in range(60):
        await clock.advance(0.02)
    kinds = wire.kinds()
    assert kinds.count("media") == 50
    # A mark after every few frames, and one after the last.
    assert kinds.count("mark") == 50 // MARK_EVERY_FRAMES
    assert kinds[-1] == "mark"
    assert kinds[: MARK_EVERY_FRAMES + 1] == ["media"] * MARK_EVERY_FRAMES + ["mark"]
    # Sent is not played: nothing is reported until Twilio echoes the last mark.
    assert wire.stopped == []
    for name in wire.marks()[:-1]:
        playout.acknowledged(name)
    await settle()
    assert wire.stopped == []
    playout.acknowledged(wire.marks()[-1])
    await settle()
    assert wire.stopped == ["r1"]


async def test_a_clear_cuts_at_the_last_mark_twilio_echoed(
    rig: tuple[TwilioPlayout, Wire, VirtualClock],
) -> None:
    playout, wire, clock = rig
    playout.play("r1", "i1", 0, b"\x01" * 16000)
    for _ in range(30):
        await clock.advance(0.02)
    marks = wire.marks()
    assert len(marks) >= 4
    playout.acknowledged(marks[0])
    playout.acknowledged(marks[1])
    cut = playout.clear(None)
    assert cut is not None
    assert (cut.response_id, cut.item_id, cut.content_index) == ("r1", "i1", 0)
    # What was heard: the audio before the second mark (not the more that was sent).
    assert cut.played_ms == wire.audio_before(marks[1]) // 8 == 200
    await settle()
    assert wire.sent[-1] == {"event": "clear", "streamSid": SID}
    sent = len(wire.sent)
    # Twilio echoes the marks of the audio it threw away: they change nothing.
    for name in marks[2:]:
        playout.acknowledged(name)
    for _ in range(10):
        await clock.advance(0.02)
    assert len(wire.sent) == sent
    assert wire.stopped == []
    assert playout.clear(None) is None


async def test_a_reply_all_sent_but_still_playing_can_be_cleared(
    rig: tuple[TwilioPlayout, Wire, VirtualClock],
) -> None:
    playout, wire, clock = rig
    playout.play("r1", "i1", 0, b"\x01" * 1600)  # 200 ms: all of it within the lead
    playout.end("r1")
    await settle()
    assert wire.kinds().count("media") == 10 and wire.kinds()[-1] == "mark"
    cut = playout.clear("r1")
    assert cut is not None and cut.played_ms == 0
    await settle()
    assert wire.sent[-1]["event"] == "clear"


async def test_a_reply_still_being_made_is_not_padded_with_silence(
    rig: tuple[TwilioPlayout, Wire, VirtualClock],
) -> None:
    playout, wire, clock = rig
    playout.play("r1", "i1", 0, b"\x01" * 250)  # a frame and a half
    for _ in range(5):
        await clock.advance(0.02)
    assert wire.kinds() == ["media"]
    playout.play("r1", "i1", 0, b"\x02" * 70)  # the second frame is whole now
    await settle()
    assert wire.kinds() == ["media", "media"]
    second = base64.b64decode(wire.sent[-1]["media"]["payload"])
    assert second == b"\x01" * 90 + b"\x02" * 70
    playout.play("r1", "i1", 0, b"\x03" * 10)
    playout.end("r1")  # the rest goes out now, padded to a frame, then the last mark
    await settle()
    assert wire.kinds() == ["media", "media", "media", "mark"]
    last = base64.b64decode(wire.sent[-2]["media"]["payload"])
    assert last[:10] == b"\x03" * 10 and len(last) == FRAME
