"""The spoken disclosure ("You are speaking with an automated assistant.").

A session given a disclosure speaks it before anything else. To a Realtime client it is an
ordinary response the server started, as with server VAD: ``response.created`` (its
``metadata`` is ``{"voxgate": "disclosure"}``), an assistant message item whose audio is the
sentence and whose transcript is its text, ``response.done``. It joins the conversation, so the
model knows what was said. The text is spoken verbatim: the response's language model is
`SpokenText`, not the session's.

It begins right after the session's ``session.created`` (a relayed session's comes from its
upstream, once that session is open) and is spoken with the embedded engines whatever serves
the session: a relay speaks it itself and then tells its upstream what was said (see
``relay_speech.py``).

Until the disclosure has been generated, client events wait (they are applied in order right
after it; `HeldEvents`); until it has been *heard* (its playout stopped, where the server
plays audio), the caller's media-track audio is recorded but not listened to, so it cannot
cut the disclosure short or start a turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, TypeVar

from ..engines.base import ChatRequest, LLMDone, LLMEvent, TextDelta
from ..protocol.commands import ResponsePlan, StartResponse
from ..protocol.connection import Output, RealtimeConnection

# Phone calls (SIP, Twilio) hear this unless their policy sets another sentence (or "").
DEFAULT_PHONE_DISCLOSURE = "You are speaking with an automated assistant."
PHONE_TRANSPORTS = frozenset({"sip", "twilio"})
METADATA = {"voxgate": "disclosure"}
# Client events held back while the disclosure is ahead of them, in characters; past this the
# oldest go on (in order) rather than the session holding more.
MAX_HELD_CHARS = 16 * 1024 * 1024
T = TypeVar("T")


def disclosure_for(policy_text: str | None, transport: str) -> str | None:
    """What a session on ``transport`` must hear first (None: nothing)."""
    if policy_text is None:
        return DEFAULT_PHONE_DISCLOSURE if transport in PHONE_TRANSPORTS else None
    return policy_text.strip() or None


def disclosure_request(text: str) -> dict[str, Any]:
    """The ``response.create`` parameters of the disclosure response."""
    return {
        "metadata": dict(METADATA),
        "output_modalities": ["audio"],
        "instructions": text,
        "tool_choice": "none",
    }


def is_disclosure(plan: ResponsePlan) -> bool:
    return plan.metadata == METADATA


FILLER_METADATA = {"voxgate": "filler"}


def filler_request(text: str) -> dict[str, Any]:
    """The ``response.create`` parameters of a relayed session's filler ("One moment…"),
    said verbatim by the embedded engines while a server tool runs (see relay_speech.py)."""
    return {**disclosure_request(text), "metadata": dict(FILLER_METADATA)}


def said_here(plan: ResponsePlan) -> bool:
    """A relayed session speaks this response itself, verbatim (disclosure or filler)."""
    return plan.metadata in (METADATA, FILLER_METADATA)


class Disclosure:
    """The disclosure of one session: its response, once begun."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.response_id: str | None = None

    def begin(self, conn: RealtimeConnection) -> list[Output]:
        """Start the disclosure response (raises ProtocolError if the session refuses it)."""
        out = conn.create_response(disclosure_request(self.text))
        self.response_id = next(o.plan.response_id for o in out if isinstance(o, StartResponse))
        return out

    def generating(self, conn: RealtimeConnection) -> bool:
        """Client events wait while this holds: not begun yet (no ``session.created``
        yet), or being generated."""
        return self.response_id is None or self.response_id in conn.responses

    def speaking(self, conn: RealtimeConnection) -> bool:
        """The caller's track audio is not listened to while this holds: generating, or its
        audio still playing (server playout)."""
        return self.generating(conn) or (
            self.response_id is not None and self.response_id in conn.playing
        )


class HeldEvents(Generic[T]):
    """Client events kept back while the disclosure is ahead of them, in their order. Once
    one is held, later ones queue behind it, so none overtakes another."""

    def __init__(self, size: Callable[[T], int], limit: int = MAX_HELD_CHARS) -> None:
        self._size = size
        self._limit = limit
        self._queue: deque[T] = deque()
        self._chars = 0

    def keep(self, event: T, ahead: bool) -> bool:
        """Hold ``event`` (True) if the disclosure is ``ahead`` or others are held."""
        if not ahead and not self._queue:
            return False
        self._queue.append(event)
        self._chars += self._size(event)
        return True

    def release(self, ahead: bool) -> T | None:
        """The next held event to apply now: once the disclosure is no longer ``ahead``, or
        past the limit in characters (the oldest goes on)."""
        if not self._queue or (ahead and self._chars <= self._limit):
            return None
        event = self._queue.popleft()
        self._chars -= self._size(event)
        return event


class SpokenText:
    """An `LLMEngine` that answers with the request's instructions, word for word."""

    name = "disclosure"

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        yield TextDelta(request.instructions)
        yield LLMDone("stop", input_tokens=0, output_tokens=0)

    async def aclose(self) -> None:
        return None
