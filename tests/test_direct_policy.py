"""The policy over a direct call's configuration, as `DirectDriver` applies it to the events
of its sideband (the upstream's wire events, given in order as the sideband would): a breach
is reverted once; a revert the upstream refuses, or a breach while one is pending, hangs the
call up. The end-to-end revert, through a real upstream, is in test_relay_direct.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from voxgate.control.guard import PolicyGuard
from voxgate.control.policy import Policy
from voxgate.engines.upstream import Upstream
from voxgate.protocol.connection import RealtimeConnection
from voxgate.session.clock import SystemClock
from voxgate.session.direct import DirectDriver
from voxgate.session.driver import DriverHost, DriverOutput, Forward
from voxgate.session.rate_limits import RateLimitBook
from voxgate.session.session import SessionLimits


class Call:
    """A direct call's driver with a host that records what it is asked to do."""

    def __init__(self, policy: Policy, bound: dict[str, Any] | None = None) -> None:
        self.conn = RealtimeConnection(model="gpt-realtime")
        if bound:  # as admission does: the binding applied, then guarded
            self.conn.configure(bound)
        self.conn.guard = PolicyGuard(policy, bound)
        self.ended: list[tuple[str, str | None]] = []
        self.audited: list[tuple[str, str | None, dict[str, Any]]] = []
        self.driver = DirectDriver(Upstream(name="hosted", url="ws://up.invalid/v1/realtime"), None)
        self.driver.call_id = "rtc_test"
        self.driver.audit = lambda action, code, detail: self.audited.append((action, code, detail))

        async def nothing() -> None:
            pass

        def spawn(work: Any, name: str) -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(work)

        self.driver.bind(
            DriverHost(
                session_id=self.conn.session_id,
                post=lambda progress: nothing(),
                spawn=spawn,
                clock=SystemClock(),
                limits=SessionLimits(),
                media_space=nothing,
                response_started=lambda: None,
                touch=lambda: None,
                end=lambda reason, code, message, close: self.ended.append((reason, code)),
                rate_limits=RateLimitBook(),
                switch=lambda driver, why: None,
            )
        )
        self.session = self.conn.config.to_wire(session_id="sess_up", expires_at=0)

    def upstream(self, event: dict[str, Any]) -> list[DriverOutput]:
        return self.driver._delivered(self.conn, json.dumps(event), event)

    def reported(self, kind: str, **changes: Any) -> list[DriverOutput]:
        session = json.loads(json.dumps(self.session))
        for path, value in changes.items():
            *parents, leaf = path.split("__")
            node = session
            for part in parents:
                node = node[part]
            node[leaf] = value
        return self.upstream({"type": kind, "event_id": "event_up", "session": session})


def _errors(out: list[DriverOutput]) -> list[str]:
    return [o.error["code"] for o in out if getattr(o, "type", None) == "error"]


def _sent(call: Call) -> list[dict[str, Any]]:
    """What the driver queued for the upstream call (its sideband is not open here)."""
    sent = []
    while not call.driver._outgoing.empty():
        sent.append(json.loads(call.driver._outgoing.get_nowait()))
    return sent


async def test_a_breach_is_reverted_and_an_allowed_change_is_kept() -> None:
    call = Call(Policy(allowed_voices=["alloy", "ash"]))
    call.reported("session.created", audio__output__voice="alloy")
    assert call.reported("session.updated", audio__output__voice="ash") != []
    assert _sent(call) == [] and call.conn.config.voice == "ash"
    out = call.reported("session.updated", audio__output__voice="verse")
    assert _errors(out) == ["voice_not_allowed"]
    [revert] = _sent(call)
    assert revert["type"] == "session.update"
    assert revert["session"]["audio"]["output"]["voice"] == "ash"
    assert set(revert["session"]) == {"type", "audio"}  # only what changed is put back
    assert call.conn.config.voice == "ash"  # the mirror never took the breach
    # The revert holds: the call goes on.
    call.reported("session.updated", audio__output__voice="ash")
    assert call.ended == []
    assert [(a, c, d["outcome"]) for a, c, d in call.audited] == [
        ("direct_session_update", "voice_not_allowed", "reverted")
    ]


async def test_a_revert_the_upstream_refuses_hangs_the_call_up() -> None:
    call = Call(Policy(allowed_tools=["lookup"]))
    call.reported("session.created")
    shell = {"type": "function", "name": "run_shell", "parameters": {"type": "object"}}
    call.reported("session.updated", tools=[shell])
    [revert] = _sent(call)
    assert revert["session"]["tools"] == []
    refusal = {"type": "invalid_request_error", "code": "invalid_value", "message": "no"}
    call.upstream(
        {"type": "error", "event_id": "e1", "error": {**refusal, "event_id": revert["event_id"]}}
    )
    assert call.ended == [("policy_violation", "revert_refused")]
    assert call.audited[-1][2]["outcome"] == "hung_up"


async def test_a_breach_while_a_revert_is_pending_hangs_the_call_up() -> None:
    call = Call(Policy(), bound={"type": "realtime", "instructions": "Only French."})
    call.reported("session.created", instructions="Only French.")
    call.reported("session.updated", instructions="Anything goes.")
    assert len(_sent(call)) == 1
    call.reported("session.updated", instructions="Anything goes, really.")
    assert call.ended == [("policy_violation", "bound_by_client_secret")]
    assert _sent(call) == []  # nothing more is tried


async def test_an_upstreams_own_fields_are_no_breach() -> None:
    call = Call(Policy(allowed_voices=["alloy"]))
    call.reported("session.created")
    out = call.upstream(
        {
            "type": "session.updated",
            "session": {**call.session, "tracing": "auto", "some_new_field": {"x": 1}},
        }
    )
    assert [o.type for o in out if isinstance(o, Forward)] == ["session.updated"]
    assert _errors(out) == [] and _sent(call) == [] and call.ended == []


async def test_a_first_report_that_breaks_the_policy_is_reverted_to_what_the_call_was_given() -> (
    None
):
    # The browser's update reached the upstream before voxgate's sideband was attached.
    call = Call(Policy(allowed_voices=["alloy"]))
    call.driver.given = {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}
    out = call.reported("session.created", audio__output__voice="verse")
    assert _errors(out) == ["voice_not_allowed"]
    [revert] = _sent(call)
    assert revert["session"] == {"type": "realtime", "audio": {"output": {"voice": "alloy"}}}
    call.reported("session.updated", audio__output__voice="alloy")
    assert call.ended == []


async def test_the_upstreams_name_for_the_admitted_model_is_no_breach() -> None:
    bound = {"type": "realtime", "model": "gpt-realtime"}
    call = Call(Policy(allowed_models=["gpt-realtime"]), bound=bound)
    out = call.reported("session.created", model="gpt-realtime-2025-08-28")
    assert _errors(out) == [] and _sent(call) == []
    # A model the browser switches to later is checked as any change is.
    out = call.reported("session.updated", model="gpt-realtime-mini")
    assert _errors(out) == ["bound_by_client_secret"]
