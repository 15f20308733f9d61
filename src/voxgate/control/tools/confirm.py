"""Two-phase tools: the pending action a call creates, the rules that settle it, and the
classifier that hears a spoken yes.

Rules (one place):
- a call of a tool that needs confirmation runs nothing; it creates a `PendingAction` with
  its arguments frozen (and their digest), a one-line summary and an expiry;
- only an explicit approval settles it as approved: an ``mcp_approval_response`` with
  ``approve: true``, or, if the tool allows it, the user's next turn heard as a clear yes;
- anything else settles it as not approved: a decline, a turn that is not a clear yes,
  silence until the expiry, a barge-in; a later call of the tool makes a new action;
- an action is settled once: a second approval of the same id finds nothing to approve,
  so one approval runs the action at most once.
What the model says never settles anything: it cannot approve its own call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from .guards import REDACTED
from .spec import CONFIRM_EXPIRY_S, ToolSpec

Settled = Literal["approved", "declined", "expired", "interrupted", "not_confirmed"]
SUMMARY_CHARS = 160


def digest(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(arguments).encode()).hexdigest()


def canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def summary(spec: ToolSpec, arguments: dict[str, Any]) -> str:
    return summary_of(spec.name, arguments, spec.sensitive_args)


def summary_of(tool: str, arguments: dict[str, Any], sensitive: Collection[str]) -> str:
    """One line a person can approve: the tool and its arguments (sensitive ones hidden)."""
    parts = [
        f"{k.replace('_', ' ')} {REDACTED if k in sensitive else _plain(v)}"
        for k, v in arguments.items()
    ]
    line = tool.replace("_", " ") + (": " + ", ".join(parts) if parts else "")
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass
class PendingAction:
    id: str
    tool: str
    call_id: str
    arguments_json: str  # canonical, frozen at request time
    digest: str
    summary: str
    expires_at: float
    spoken: bool
    # The conversation item after which the user's "next turn" is looked for.
    request_item_id: str
    # The response that reads the summary back (a barge-in into it cancels the action).
    readback_response_id: str | None = None

    @property
    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = json.loads(self.arguments_json)
        return args


@dataclass
class Confirmations:
    """The open actions of one session, on the session's clock."""

    _open: dict[str, PendingAction] = field(default_factory=dict)

    def open(
        self,
        spec: ToolSpec,
        arguments: dict[str, Any],
        *,
        action_id: str,
        call_id: str,
        now: float,
    ) -> PendingAction:
        return self.hold(
            action_id,
            spec.name,
            arguments,
            sensitive=spec.sensitive_args,
            now=now,
            expiry_s=spec.confirm_expiry_s,
            spoken=spec.spoken_confirmation,
            call_id=call_id,
        )

    def hold(
        self,
        action_id: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        sensitive: Collection[str],
        now: float,
        expiry_s: float = CONFIRM_EXPIRY_S,
        spoken: bool = False,
        call_id: str = "",
    ) -> PendingAction:
        """Open an action for any tool (an MCP server's too), under the same rules."""
        action = PendingAction(
            id=action_id,
            tool=tool,
            call_id=call_id,
            arguments_json=canonical(arguments),
            digest=digest(arguments),
            summary=summary_of(tool, arguments, sensitive),
            expires_at=now + expiry_s,
            spoken=spoken,
            request_item_id=action_id,
        )
        self._open[action_id] = action
        return action

    def get(self, action_id: str) -> PendingAction | None:
        return self._open.get(action_id)

    def settle(self, action_id: str, now: float, approve: bool) -> tuple[PendingAction, Settled]:
        """Close the action: (it, how). Raises KeyError when it is not open (unknown, or
        settled already: an approval never runs an action twice)."""
        action = self._open.pop(action_id)
        if now >= action.expires_at:
            return action, "expired"
        return action, "approved" if approve else "declined"

    def drop(self, action_id: str) -> PendingAction | None:
        return self._open.pop(action_id, None)

    def spoken(self) -> list[PendingAction]:
        """Open actions a spoken answer may settle, oldest first."""
        return [a for a in self._open.values() if a.spoken]

    def all(self) -> list[PendingAction]:
        return list(self._open.values())

    def expired(self, now: float) -> list[PendingAction]:
        gone = [a for a in self._open.values() if now >= a.expires_at]
        for action in gone:
            del self._open[action.id]
        return gone


# A clear yes: every word comes from this small vocabulary, at least one is a strong
# affirmation, and nothing negates or hedges. "Yes please", "go ahead", "confirm",
# "yeah do it" pass; "yes but wait", "no", "not yet", "maybe", "what?" do not.
_STRONG = {"yes", "yeah", "yep", "yup", "confirm", "confirmed", "affirmative"}
_STRONG_PAIRS = {("go", "ahead"), ("do", "it")}
_FILLER = {"please", "go", "ahead", "do", "it", "sure", "ok", "okay", "that's", "thats"}
_FILLER |= {"right", "correct", "i", "absolutely", "thank", "you", "thanks", "oh", "um", "uh"}
_NEGATIVE = {"no", "not", "don't", "dont", "nope", "cancel", "stop", "wait", "never", "hold"}
_NEGATIVE |= {"but", "maybe", "what", "why", "wrong", "later", "if"}


def is_clear_yes(words: str) -> bool:
    tokens = re.findall(r"[a-z']+", words.lower())
    if not tokens or len(tokens) > 8:
        return False
    if any(t in _NEGATIVE for t in tokens):
        return False
    if any(t not in _STRONG and t not in _FILLER for t in tokens):
        return False
    pairs = set(zip(tokens, tokens[1:], strict=False))
    return any(t in _STRONG for t in tokens) or bool(pairs & _STRONG_PAIRS)
