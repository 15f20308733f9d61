"""`RelayDriver` in a session, against an upstream that speaks the Realtime wire protocol from
a script (the `UpstreamProtocol` seam, in memory): what is relayed verbatim, what is applied
first, what is held back, and the typed signal a failed upstream gives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import validated
from voxgate.engines.testing import ScriptedLLM, ScriptedTTS, text_script
from voxgate.engines.upstream import (
    Upstream,
    UpstreamClosed,
    UpstreamError,
    UpstreamRefused,
    UpstreamStalled,
)
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.limits import ConnectionLimits
from voxgate.session.driver import DriverOutput, Forward
from voxgate.session.engines import EngineSet
from voxgate.session.relay import RelayDriver
from voxgate.session.relay_types import UpstreamLost
from voxgate.session.testing import running_session

SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_upstream1",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Upstream default.",
    "tools": [],
    "tool_choice": "auto",
    "max_output_tokens": "inf",
    "tracing": None,
    "prompt": None,
    "expires_at": 0,
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": None,
            "noise_reduction": None,
            "turn_detection": None,
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
    },
    "include": None,
    "truncation": "auto",
}


def event(kind: str, event_id: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": event_id, **fields})


def response(rid: str, status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": [],
        "conversation_id": "conv_up",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}},
        "usage": None,
        "metadata": None,
        **fields,
    }


class ScriptedUpstream:
    """The upstream end: `sent` is what the relay sent it; `emit` speaks to the relay."""

    def __init__(self, refuse: UpstreamError | None = None) -> None:
        self.sent: list[str] = []
        self.got = asyncio.Queue[str]()
        self._to_relay = asyncio.Queue[str | None]()
        self.refuse = refuse
        self.connects: list[tuple[str, str | None]] = []
        self.closed = asyncio.Event()

    async def connect(
        self, upstream: Upstream, model: str, *, safety_identifier: str | None = None
    ) -> ScriptedUpstream:
        self.connects.append((model, safety_identifier))
        if self.refuse is not None:
            raise self.refuse
        self.emit(event("session.created", "event_up0", session=SESSION))
        return self

    def emit(self, text: str | None) -> None:
        """Send the relay an event (None: drop the connection)."""
        self._to_relay.put_nowait(text)

    async def send(self, text: str) -> None:
        self.sent.append(text)
        self.got.put_nowait(text)

    async def recv(self) -> str:
        text = await self._to_relay.get()
        if text is None:
            raise UpstreamClosed("upstream 'up' closed the session (the connection dropped)", None)
        return text

    async def close(self) -> None:
        self.closed.set()

    async def next_sent(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return dict(json.loads(await self.got.get()))


def engines() -> EngineSet:
    # The embedded engines are never used by a relayed session.
    return EngineSet(llm=ScriptedLLM([text_script("unused")]), tts=ScriptedTTS())


def relay(up: ScriptedUpstream, **options: Any) -> RelayDriver:
    stall = options.pop("stall_timeout_s", 15.0)
    upstream = Upstream(name="up", url="ws://upstream.invalid/v1/realtime", stall_timeout_s=stall)
    return RelayDriver(upstream, up, model="gpt-realtime", **options)


async def test_upstream_events_reach_the_client_byte_for_byte() -> None:
    up = ScriptedUpstream()
    async with running_session(engines(), driver=relay(up, safety_identifier="user-1")) as run:
        created = await run.transport.next_event()
        assert created == json.loads(event("session.created", "event_up0", session=SESSION))
        run.transport.send_event({"type": "response.create", "event_id": "evt_client_1"})
        # The client's event goes upstream as the client wrote it.
        assert await up.next_sent() == {"type": "response.create", "event_id": "evt_client_1"}
        script = [
            event("response.created", "event_up1", response=response("resp_up1")),
            event(
                "response.output_audio.delta",
                "event_up2",
                response_id="resp_up1",
                item_id="item_up1",
                output_index=0,
                content_index=0,
                delta="AAAA",
            ),
            event(
                "response.done",
                "event_up3",
                response=response(
                    "resp_up1",
                    "completed",
                    usage={
                        "total_tokens": 30,
                        "input_tokens": 10,
                        "output_tokens": 20,
                        "input_token_details": {"text_tokens": 10, "audio_tokens": 0},
                        "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
                    },
                ),
            ),
        ]
        for text in script:
            up.emit(text)
        await run.transport.events_until("response.done")
        relayed = run.transport.sent
        assert relayed[-3:] == script
        for text in relayed:
            validated(text)
    assert up.connects == [("gpt-realtime", "user-1")]
    assert up.closed.is_set()


async def test_the_initial_configuration_is_applied_before_session_created() -> None:
    up = ScriptedUpstream()
    initial = {
        "type": "realtime",
        "instructions": "Bound.",
        "audio": {"output": {"voice": "marin"}},
    }
    async with running_session(engines(), driver=relay(up, initial=initial)) as run:
        run.transport.send_event({"type": "input_audio_buffer.clear", "event_id": "evt_early"})
        update = await up.next_sent()
        assert update == {"type": "session.update", "session": initial}
        applied = {**SESSION, "instructions": "Bound."}
        applied["audio"]["output"]["voice"] = "marin"  # type: ignore[index]
        up.emit(event("session.updated", "event_up1", session=applied))
        created = await run.transport.next_event()
        # The upstream's session.created (its event id), showing the applied configuration.
        assert (created["type"], created["event_id"]) == ("session.created", "event_up0")
        assert created["session"]["instructions"] == "Bound."
        # What the client sent before the upstream session was open went after the update.
        assert await up.next_sent() == {"type": "input_audio_buffer.clear", "event_id": "evt_early"}


async def test_a_stall_while_a_response_is_expected_is_a_typed_signal() -> None:
    up = ScriptedUpstream()
    lost: list[UpstreamLost] = []

    def on_lost(conn: RealtimeConnection, signal: UpstreamLost) -> list[DriverOutput]:
        lost.append(signal)
        return [Forward(json.dumps({"type": "error", "event_id": "event_x", "error": {}}), "error")]

    driver = relay(up, stall_timeout_s=0.3, on_lost=on_lost)
    async with running_session(engines(), driver=driver) as run:
        await run.transport.next_event()
        # The stall is timed on the session's clock (virtual here): quiet while nothing is
        # expected is no stall, however long.
        await run.clock.advance(60)
        assert not lost
        run.transport.send_event({"type": "response.create"})
        await up.next_sent()
        up.emit(event("response.created", "event_up1", response=response("resp_up1")))
        await run.transport.events_until("response.created")
        # An event from the upstream restarts the count: 0.2 s, an event, 0.2 s is no stall.
        await run.clock.advance(0.2)
        up.emit(event("rate_limits.updated", "event_up2", rate_limits=[]))
        await run.transport.events_until("rate_limits.updated")
        await run.clock.advance(0.2)
        assert not lost
        await run.clock.advance(0.2)  # 0.4 s without an event
        events = await run.transport.events_until("error")
        done = next(e for e in events if e["type"] == "response.done")
        assert done["response"]["id"] == "resp_up1"
        assert done["response"]["status"] == "failed"
        assert done["response"]["status_details"]["error"]["code"] == "upstream_unavailable"
    (signal,) = lost
    assert isinstance(signal.error, UpstreamStalled) and signal.error.retryable
    assert (signal.phase, signal.cut) == ("session", ("resp_up1",))


async def test_without_a_handler_a_lost_upstream_ends_the_session() -> None:
    refused = UpstreamRefused("upstream 'up' refused the session (HTTP 503)", 503)
    up = ScriptedUpstream(refuse=refused)
    async with running_session(engines(), driver=relay(up)) as run:
        events = await run.transport.rest()
        ended = await run.ended()
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"]["code"] == "upstream_unavailable"
    assert "HTTP 503" in events[0]["error"]["message"]
    assert ended.reason == "upstream_lost"
    assert run.transport.close_calls[0][0] == 1011
    assert refused.retryable


async def test_a_hook_can_take_an_upstream_event_instead_of_the_client() -> None:
    up = ScriptedUpstream()
    taken: list[dict[str, Any]] = []

    def hook(
        driver: RelayDriver, conn: RealtimeConnection, data: dict[str, Any]
    ) -> list[DriverOutput] | None:
        if data["type"] != "response.function_call_arguments.done":
            return None
        taken.append(data)
        output = {"type": "function_call_output", "call_id": data["call_id"], "output": "{}"}
        driver.send_upstream(conn, {"type": "conversation.item.create", "item": output})
        return []

    async with running_session(engines(), driver=relay(up, hook=hook)) as run:
        await run.transport.next_event()
        call = event(
            "response.function_call_arguments.done",
            "event_up1",
            response_id="resp_up1",
            item_id="item_up1",
            output_index=0,
            call_id="call_1",
            name="lookup",
            arguments="{}",
        )
        up.emit(call)
        sent = await up.next_sent()
        assert sent["item"]["call_id"] == "call_1"
        up.emit(event("input_audio_buffer.cleared", "event_up2"))
        assert (await run.transport.next_event())["event_id"] == "event_up2"
    assert [t["event_id"] for t in taken] == ["event_up1"]


async def test_a_response_voxgate_stops_ends_once_and_is_cancelled_upstream() -> None:
    up = ScriptedUpstream()
    driver = relay(up)
    async with running_session(engines(), driver=driver) as run:
        await run.transport.next_event()
        run.transport.send_event({"type": "response.create"})
        await up.next_sent()
        up.emit(event("response.created", "event_up1", response=response("resp_up1")))
        await run.transport.events_until("response.created")
        assert driver.busy
        details = {"type": "cancelled", "reason": None}
        await run.session.inbox.put(lambda conn: driver.stop_responses(conn, details))
        done = (await run.transport.events_until("response.done"))[-1]
        assert (done["response"]["id"], done["response"]["status"]) == ("resp_up1", "cancelled")
        assert await up.next_sent() == {"type": "response.cancel", "response_id": "resp_up1"}
        assert not driver.busy
        # The upstream's own end of it is not shown a second time.
        up.emit(event("response.done", "event_up2", response=response("resp_up1", "cancelled")))
        up.emit(event("input_audio_buffer.cleared", "event_up3"))
        assert (await run.transport.next_event())["event_id"] == "event_up3"


async def test_a_relay_switched_to_mid_session_announces_itself_with_session_updated() -> None:
    up = ScriptedUpstream()
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    replay = [{"type": "conversation.item.create", "item": item}]
    driver = relay(up, announce="updated", replay=replay)
    async with running_session(engines()) as run:  # starts on the embedded pipeline
        assert (await run.transport.next_event())["type"] == "session.created"

        def switch(conn: RealtimeConnection) -> list[DriverOutput]:
            run.session.switch_driver(driver, "test")
            return []

        await run.session.inbox.put(switch)
        assert await up.next_sent() == replay[0]  # before anything of the client's
        updated = await run.transport.next_event()
        assert (updated["type"], updated["session"]["id"]) == ("session.updated", "sess_upstream1")
        run.transport.send_event({"type": "response.create", "event_id": "evt_after"})
        assert (await up.next_sent())["event_id"] == "evt_after"
    assert run.session.driver is driver


async def test_events_over_the_pipelines_size_limits_are_not_forwarded() -> None:
    up = ScriptedUpstream()
    small = RealtimeConnection(limits=ConnectionLimits(max_item_bytes=1000))
    async with running_session(engines(), driver=relay(up), connection=small) as run:
        await run.transport.next_event()
        text = {"type": "input_text", "text": "x" * 2000}
        item = {"type": "message", "role": "user", "content": [text]}
        run.transport.send_event({"type": "conversation.item.create", "item": item})
        error = await run.transport.next_event()
        assert (error["error"]["code"], error["error"]["param"]) == ("item_too_large", "item")
        item["content"] = [{"type": "input_text", "text": "fits"}]
        run.transport.send_event({"type": "conversation.item.create", "item": item})
        assert (await up.next_sent())["item"]["content"][0]["text"] == "fits"
    assert len(up.sent) == 1


class SilentUpstream(ScriptedUpstream):
    """Accepts the connection and never says ``session.created``."""

    async def connect(
        self, upstream: Upstream, model: str, *, safety_identifier: str | None = None
    ) -> ScriptedUpstream:
        self.connects.append((model, safety_identifier))
        return self


async def test_an_upstream_that_never_opens_the_session_stalls_on_the_sessions_clock() -> None:
    up = SilentUpstream()
    async with running_session(engines(), driver=relay(up, stall_timeout_s=5.0)) as run:
        for _ in range(48):  # 4.8 s of the session's (virtual) clock
            await run.clock.advance(0.1)
        assert up.connects and run.transport.sent == []
        for _ in range(5):
            await run.clock.advance(0.1)
        events = await run.transport.rest()
    [error] = events
    assert error["error"]["code"] == "upstream_unavailable"
    assert "did not open the session within 5 s" in error["error"]["message"]
