"""The tool broker of one session: every server-tool call the model makes passes here.

Given a call (tool name, call id, raw arguments) and the caller's identity it decides, in
this order, and records each decision in the audit log (kind ``tool``):
1. allowlist — the tool must be one the caller may use (policy ``allowed_tools`` and the
   tool's ``audience``); a tool that was never offered but is called anyway does not run;
2. validation — the arguments must fit the tool's JSON Schema;
3. limits — ``max_calls_per_session``;
4. confirmation — a tool that needs it opens a pending action and runs nothing;
5. execution — once, under an idempotency key, within the tool's timeout and concurrency.
An approval (``settle``) re-enters at step 3 with the arguments frozen at step 4.
The session-side flow (items, continuation, filler, barge-in) is in `tool_flow.py`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..control.audit import AuditRecord, AuditSink
from ..control.identity import Principal
from ..control.tools import (
    Confirmations,
    PendingAction,
    Refusal,
    ToolSpec,
    idempotency_key,
    may_use,
    parse_arguments,
    redacted,
)
from ..control.tools.guards import not_allowed
from .clock import Clock
from .tool_exec import Caller, Executed, ToolRegistry

CONFIRM_NOTE = (
    "Nothing was done yet. Read the summary back to the user in a short sentence and ask "
    "them to confirm. Do not call the tool again: the user's answer settles it."
)


@dataclass(frozen=True, slots=True)
class Ready:
    """A call that passed every guardrail and may run now."""

    spec: ToolSpec
    arguments: dict[str, Any]
    call_id: str
    action_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the model is told (the ``function_call_output``), and how the call ended."""

    output: str
    status: str  # ok | error | timeout | refused | confirmation_required | not_approved
    action: PendingAction | None = None


class ToolBroker:
    def __init__(
        self,
        registry: ToolRegistry,
        principal: Principal | None,
        session_id: str,
        clock: Clock,
        audit: AuditSink | None = None,
    ) -> None:
        self.registry = registry
        self.principal = principal
        self.session_id = session_id
        self.clock = clock
        self.audit_sink = audit
        self.confirmations = Confirmations()
        self._calls: Counter[str] = Counter()
        self._done: dict[str, Executed] = {}  # idempotency key → result (writes only)
        p = principal
        self.caller = Caller(
            p.key_id if p else None, p.tenant if p else None, p.user_hash if p else None, session_id
        )

    # -- what the model is offered --------------------------------------------------------

    def handles(self, name: str) -> bool:
        """Whether a call of ``name`` is the server's to decide (allowed or not)."""
        return name in self.registry.specs

    def offered(self) -> list[dict[str, Any]]:
        return [s.definition() for s in self.registry.specs.values() if may_use(s, self.principal)]

    # -- deciding -------------------------------------------------------------------------

    def check(self, name: str, call_id: str, raw: str, action_id: str) -> Ready | Outcome:
        """Steps 1–4 for a model's call: a `Ready` call, or the outcome the model is told."""
        spec = self.registry.specs.get(name)
        if spec is None or not may_use(spec, self.principal):
            return self._refused(name, call_id, {}, not_allowed(name), spec)
        arguments = parse_arguments(spec, raw)
        if isinstance(arguments, Refusal):
            return self._refused(name, call_id, {"raw_arguments": "[not shown]"}, arguments, spec)
        if (over := self._over_limit(spec)) is not None:
            return self._refused(name, call_id, arguments, over, spec)
        if spec.needs_confirmation:
            action = self.confirmations.open(
                spec, arguments, action_id=action_id, call_id=call_id, now=self.clock.monotonic()
            )
            self._audit(
                spec,
                "awaiting_confirmation",
                arguments,
                call_id,
                action=action.id,
                summary=action.summary,
                arguments_digest=action.digest,
            )
            output = {
                "status": "confirmation_required",
                "action_id": action.id,
                "summary": action.summary,
                "note": CONFIRM_NOTE,
            }
            return Outcome(_json(output), "confirmation_required", action)
        return Ready(spec, arguments, call_id, action_id)

    def settle(
        self, action_id: str, approve: bool, channel: str, words: str | None
    ) -> Ready | Outcome | None:
        """An answer to a pending action: `Ready` when approved (and still within its
        limits), else the outcome; None when no such action is open (unknown, or settled
        already — one approval runs an action once)."""
        try:
            action, how = self.confirmations.settle(action_id, self.clock.monotonic(), approve)
        except KeyError:
            return None
        return self._settled(action, how, channel, words)

    def lapse(
        self, action: PendingAction, how: str, channel: str, words: str | None = None
    ) -> Outcome:
        """An action that ends without approval (an answer that is not a clear yes, expiry,
        barge-in): record it."""
        self.confirmations.drop(action.id)
        result = self._settled(action, how, channel, words)
        assert isinstance(result, Outcome)
        return result

    def _settled(
        self, action: PendingAction, how: str, channel: str, words: str | None
    ) -> Ready | Outcome:
        spec = self.registry.specs[action.tool]
        arguments = action.arguments
        detail = {"channel": channel, "words": words, "arguments_digest": action.digest}
        self._audit(spec, how, arguments, action.call_id, action=action.id, **detail)
        if how != "approved":
            reason = {
                "declined": "the user declined",
                "not_confirmed": "the user's answer was not a clear yes",
                "expired": "nobody confirmed it in time",
                "interrupted": "the user interrupted before confirming",
            }.get(how, how)
            message = f"Not done: {reason}. The action '{action.summary}' was cancelled."
            return Outcome(_json({"status": "cancelled", "message": message}), "not_approved")
        if (over := self._over_limit(spec)) is not None:
            return self._refused(spec.name, action.call_id, arguments, over, spec)
        return Ready(spec, arguments, action.call_id, action.id)

    # -- running --------------------------------------------------------------------------

    async def run(self, ready: Ready) -> Outcome:
        """Step 5: execute once and record the result. A second run of the same action
        (a retry) returns the first result without calling the tool again."""
        spec = ready.spec
        key = idempotency_key(self.session_id, ready.action_id)
        self._calls[spec.name] += 1
        started = time.perf_counter()
        done = self._done.get(key)
        if done is None:
            done = await self.registry.execute(spec, ready.arguments, self.caller, key)
            if spec.effect != "read":  # only what changes things must never run twice
                self._done[key] = done
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self._audit(
            spec,
            "ran",
            ready.arguments,
            ready.call_id,
            action=ready.action_id,
            status=done.status,
            http_status=done.http_status,
            latency_ms=latency_ms,
            idempotency_key=key,
        )
        return Outcome(done.output, done.status)

    def record_cancelled(self, ready: Ready, why: str) -> None:
        self._audit(
            ready.spec,
            "cancelled",
            ready.arguments,
            ready.call_id,
            action=ready.action_id,
            reason=why,
        )

    # -- helpers --------------------------------------------------------------------------

    def _over_limit(self, spec: ToolSpec) -> Refusal | None:
        limit = spec.max_calls_per_session
        if limit is None or self._calls[spec.name] < limit:
            return None
        return Refusal(
            "call_limit",
            f"'{spec.name}' may be called at most {limit} times in one session; it was not "
            "run. Tell the user this limit was reached.",
        )

    def _refused(
        self,
        name: str,
        call_id: str,
        arguments: dict[str, Any],
        refusal: Refusal,
        spec: ToolSpec | None,
    ) -> Outcome:
        shown = redacted(spec, arguments) if spec is not None else {}
        self._record(
            name,
            "refused",
            call_id,
            arguments=shown,
            guardrail=refusal.guardrail,
            message=refusal.message,
        )
        return Outcome(refusal.output(), "refused")

    def _audit(
        self, spec: ToolSpec, decision: str, arguments: dict[str, Any], call_id: str, **detail: Any
    ) -> None:
        self._record(spec.name, decision, call_id, arguments=redacted(spec, arguments), **detail)

    def _record(self, tool: str, decision: str, call_id: str, **detail: Any) -> None:
        if self.audit_sink is None:
            return
        p = self.principal
        if p is not None and p.client_secret_id is not None:
            detail["client_secret_id"] = p.client_secret_id
        self.audit_sink.record(
            AuditRecord(
                "tool",
                key_id=p.key_id if p else None,
                tenant=p.tenant if p else None,
                user_hash=p.user_hash if p else None,
                session_id=self.session_id,
                code=decision,
                detail={"tool": tool, "call_id": call_id, **detail},
                at=self.clock.wall(),
            )
        )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)
