"""A relayed session's disclosure and its playout bound, on virtual time against an upstream
speaking the Realtime wire protocol from a script: voxgate says the sentence itself before
any upstream reply and then tells the upstream; past the playout's bound the rest of an
upstream reply is not played."""

from __future__ import annotations

import base64
import json
from typing import Any

from _helpers_protocol import StallingTTS
from conftest import validated
from test_relay_driver import ScriptedUpstream, engines, event, relay, response
from voxgate.engines.testing import ScriptedLLM
from voxgate.session.disclosure import HeldEvents
from voxgate.session.engines import EngineSet
from voxgate.session.playout import ServerPlayout
from voxgate.session.testing import running_session

SENTENCE = "You are speaking with an automated assistant."


def audio_delta(event_id: str, rid: str, pcm: bytes) -> str:
    return event(
        "response.output_audio.delta",
        event_id,
        response_id=rid,
        item_id=f"item_{rid}",
        output_index=0,
        content_index=0,
        delta=base64.b64encode(pcm).decode("ascii"),
    )


async def test_the_relay_says_the_disclosure_before_any_upstream_reply_and_tells_it() -> None:
    up = ScriptedUpstream()
    async with running_session(engines(), driver=relay(up), validate=validated) as run:
        run.session.disclose(SENTENCE)
        # An application asks for a greeting at once, before the session is even open.
        run.transport.send_event({"type": "response.create", "event_id": "evt_greet"})
        said = await run.transport.events_until("response.done")
        # The upstream hears first what was said, then the client's event.
        told = await up.next_sent()
        assert await up.next_sent() == {"type": "response.create", "event_id": "evt_greet"}
        item = said[-1]["response"]["output"][0]
        up.emit(event("conversation.item.added", "event_up1", item={**told["item"]}))
        up.emit(event("response.created", "event_up2", response=response("resp_up1")))
        reply = await run.transport.events_until("response.created")

    kinds = [e["type"] for e in said]
    assert kinds[0] == "session.created"
    assert said[1]["type"] == "response.created"
    assert said[1]["response"]["metadata"] == {"voxgate": "disclosure"}
    assert "response.output_audio.delta" in kinds  # heard, in the session's format
    [transcript] = [e for e in said if e["type"] == "response.output_audio_transcript.done"]
    assert transcript["transcript"] == SENTENCE
    assert said[-1]["response"]["status"] == "completed"
    assert told["type"] == "conversation.item.create"
    assert told["item"] == {
        "id": item["id"],
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": SENTENCE}],
    }
    # The upstream's echo of the item is not relayed: the client has the item already.
    assert [e["type"] for e in reply] == ["response.created"]


class GreetingUpstream(ScriptedUpstream):
    """An upstream that greets on its own as soon as the session opens."""

    async def connect(self, *args: Any, **kwargs: Any) -> ScriptedUpstream:
        opened = await super().connect(*args, **kwargs)
        self.emit(event("response.created", "event_up1", response=response("resp_up1")))
        return opened


async def test_upstream_events_wait_while_the_disclosure_is_generated() -> None:
    up = GreetingUpstream()
    async with running_session(engines(), driver=relay(up), validate=validated) as run:
        run.session.disclose(SENTENCE)
        events = await run.transport.events_until(
            lambda e: e["type"] == "response.created" and e["response"]["id"] == "resp_up1"
        )
    created = [e["response"]["id"] for e in events if e["type"] == "response.created"]
    done = [e["response"]["id"] for e in events if e["type"] == "response.done"]
    assert created[-1] == "resp_up1"
    assert len(created) == 2 and done == [created[0]]  # the disclosure ended before it


async def test_past_the_playout_bound_the_rest_of_an_upstream_reply_is_not_played() -> None:
    up = ScriptedUpstream()
    dropped: list[tuple[str, float]] = []
    playout = ServerPlayout(max_queued_s=0.1)
    driver = relay(up, audio_dropped=lambda name, s: dropped.append((name, s)))
    async with running_session(engines(), driver=driver, playout=playout) as run:
        await run.transport.next_event()
        tenth = b"\x10\x00" * 2400  # 0.1 s at 24 kHz
        script = [
            event("response.created", "event_up1", response=response("resp_up1")),
            audio_delta("event_up2", "resp_up1", tenth),  # the playout is full after this
            audio_delta("event_up3", "resp_up1", tenth),
            audio_delta("event_up4", "resp_up1", tenth),
            event(
                "response.output_audio.done",
                "event_up5",
                response_id="resp_up1",
                item_id="item_resp_up1",
                output_index=0,
                content_index=0,
            ),
            event("response.done", "event_up6", response=response("resp_up1", "completed")),
        ]
        for text in script:
            up.emit(text)
        first = await run.transport.events_until("response.done")
        assert playout.core.queued_s == 0.1  # the first tenth only
        heard = playout.take(2400 * 3)
        stopped = await run.transport.events_until("output_audio_buffer.stopped")
        # The playout has room again: the next reply plays whole.
        up.emit(event("response.created", "event_up7", response=response("resp_up2")))
        up.emit(audio_delta("event_up8", "resp_up2", tenth[:2400]))
        await run.transport.events_until("output_audio_buffer.started")
        assert playout.core.queued_s == 0.05
    kinds = [e["type"] for e in first + stopped]
    assert kinds.count("output_audio_buffer.started") == 1
    assert kinds.count("output_audio_buffer.stopped") == 1
    assert "output_audio_buffer.cleared" not in kinds
    assert heard[: len(tenth)] == tenth and not any(heard[len(tenth) :])
    assert dropped == [("up", 0.1), ("up", 0.1)]
    for e in first + stopped:
        validated(json.dumps(e))


def test_events_held_for_the_disclosure_keep_their_order_past_the_bound() -> None:
    held = HeldEvents[str](len, limit=10)
    assert not held.keep("early", ahead=False)  # nothing to wait for: applied at once
    assert held.keep("aaaa", ahead=True) and held.keep("bbbb", ahead=True)
    assert held.release(ahead=True) is None  # 8 characters: within the bound
    assert held.keep("cccc", ahead=True)
    assert held.release(ahead=True) == "aaaa"  # 12: past it, the oldest goes on
    assert held.release(ahead=True) is None
    # Once the disclosure is generated, newer events still queue behind the held ones.
    assert held.keep("dddd", ahead=False)
    assert [held.release(ahead=False) for _ in range(4)] == ["bbbb", "cccc", "dddd", None]


async def test_an_upstream_lost_while_the_disclosure_is_said_ends_it_failed() -> None:
    up, tts = ScriptedUpstream(), StallingTTS()
    said = EngineSet(llm=ScriptedLLM([]), tts=tts)
    async with running_session(said, driver=relay(up), validate=validated) as run:
        run.session.disclose(SENTENCE)
        run.transport.send_event({"type": "response.create", "event_id": "evt_greet"})
        await run.transport.events_until("response.output_audio.delta")  # being said
        up.emit(None)  # the upstream drops the connection
        events = await run.transport.rest()
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["metadata"] == {"voxgate": "disclosure"}
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["code"] == "upstream_unavailable"
    assert events[-1]["error"]["code"] == "upstream_unavailable"  # no fallback here
    assert tts.closed.is_set()  # its synthesis stopped with it
    assert up.sent == []  # neither it nor the held greeting reached the lost upstream
