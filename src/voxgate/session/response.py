"""The Response unit: one cancellable task that turns a plan into engine work.

The runner never touches protocol state. It posts *progress* (small functions of the
connection) to the session's inbox; the session's main loop applies them in order, so the
connection stays single-writer and event order is exact. Cancelling the task closes the LLM
stream and the speech synthesis at once (both are async generators closed by `aclosing`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ..audio import AudioFormat, OutputConverter
from ..engines.base import LLMDone, TextDelta, ToolCallDelta
from ..engines.errors import EngineError
from ..protocol import mcp_flow
from ..protocol.commands import ResponsePlan
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from ..protocol.items import Item
from ..protocol.mcp import McpFunction
from .clock import Clock, SystemClock
from .context import chat_request
from .engines import EngineSet
from .mcp import McpCallRunner, SessionMcp
from .sentences import SentenceSplitter
from .tool_flow import ServerCall, SessionTools
from .truncation import ContextTooLong

log = logging.getLogger(__name__)

Progress = Callable[[RealtimeConnection], list[Output]]
Post = Callable[[Progress], Awaitable[None]]
# Rounds of model → MCP calls → model within one response, at most.
MAX_TOOL_ROUNDS = 4


@dataclass
class _Call:
    item_id: str
    call_id: str
    name: str
    # Set for a call to an MCP tool: it runs on the server as an `mcp_call` item.
    mcp: McpFunction | None = None
    arguments: str = ""
    # Whether its `mcp_call` item is on the wire yet (not while approval may be asked).
    opened: bool = True


@dataclass
class ResponseRunner:
    plan: ResponsePlan
    engines: EngineSet
    post: Post
    # Waits while the outbound media lane is full: speech never runs far ahead of the socket.
    media_space: Callable[[], Awaitable[None]]
    # Awaited before the context is read: transcripts of the user's latest words.
    before: Awaitable[None] | None = None
    # Audio goes out at most this far ahead of real time (None: as fast as it is made, the
    # client buffering it, as over WebSocket). Where the server plays the audio itself this
    # bounds what it holds; the response still ends when generation ends, long before the
    # audio has played, and barge-in cuts the playout where the user stopped hearing it.
    lead_s: float | None = None
    clock: Clock = field(default_factory=SystemClock)
    # The language model's context window in tokens (None: unknown, nothing is trimmed).
    context_tokens: int | None = None
    # Text one response may hand to speech synthesis (None: no bound); past it the response
    # ends as incomplete with an error that says so.
    max_speech_chars: int | None = None
    # Server tools: their calls are run here (tool_flow.py), never sent to the client.
    tools: SessionTools | None = None
    _spoken_chars: int = 0
    _paced_from: float | None = None
    _sent_s: float = 0.0
    _calls: dict[int, _Call] = field(default_factory=dict)
    _open_call: int | None = None
    _spoken_any: bool = False
    _server_calls: dict[int, ServerCall] = field(default_factory=dict)
    # MCP calls run inside the response (None: no MCP in this session).
    mcp: SessionMcp | None = None

    @property
    def response_id(self) -> str:
        return self.plan.response_id

    async def run(self) -> None:
        """Generate the response and post its end. Cancellation propagates untouched: the
        connection has already ended a cancelled response."""
        rid = self.response_id
        try:
            if self.before is not None:
                await self.before
            if self.tools is not None:
                self.plan = await self.tools.prepare(self.plan, self._say)
            status, details, usage = await self._generate()
        except _SpeechLimit:
            limit = self.max_speech_chars
            error = ProtocolError(
                f"The reply was cut after {limit} characters of speech, the most one response "
                "may speak. Ask for a shorter answer, or use text output for long ones.",
                code="response_speech_too_long",
            )
            await self.post(lambda c: [c.error(error)])
            status, details = "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
            usage = (None, None)
        except EngineError as exc:
            log.warning("response %s failed: %r", rid, exc)
            # Also an `error` event: clients that only watch errors (agents SDKs, consoles)
            # learn what broke and what to fix, not just that the reply ended early.
            code, kind = _error_kind(exc)
            error = ProtocolError(exc.message, code=code, type=kind)
            await self.post(lambda c: [c.error(error)])
            status, details, usage = "failed", _failure(exc.message, code, kind), (None, None)
        except Exception as exc:  # a bug must end this response, never the session
            log.exception("response %s crashed", rid)
            status, details, usage = (
                "failed",
                _failure(f"internal error: {exc}", "server_error", "server_error"),
                (
                    None,
                    None,
                ),
            )
        # Server tools ran and the model has not spoken their results yet: a new response
        # follows at once, in the same step, so nothing can start in between.
        more = self.tools is not None and self._server_calls and not self._calls
        more = more and status == "completed" and self.plan.conversation == "auto"

        def finish(c: RealtimeConnection) -> list[Output]:
            out = c.finish_response(rid, status, details, usage)  # type: ignore[arg-type]
            return out + self.tools.continuation(c) if more and self.tools else out

        await self.post(finish)

    async def _generate(self) -> tuple[str, dict[str, Any] | None, tuple[int | None, int | None]]:
        splitter = SentenceSplitter()
        done = LLMDone()
        tokens_in = tokens_out = 0
        calls = McpCallRunner(self.plan, self.mcp or SessionMcp(), self.post, self._say, self.clock)
        context: list[Item] = [*self.plan.context, *await calls.run_approved()]
        for _ in range(MAX_TOOL_ROUNDS):
            plan = dataclasses.replace(self.plan, context=context)
            async with aclosing(
                self.engines.llm.stream(chat_request(plan, self.context_tokens))
            ) as stream:
                async for event in stream:
                    match event:
                        case TextDelta(text=text):
                            await self._text(splitter, text)
                        case ToolCallDelta():
                            await self._tool_call(splitter, event)
                        case LLMDone():
                            done = event
            await self._speak(splitter.flush())
            await self._close_call()
            tokens_in += done.input_tokens or 0
            tokens_out += done.output_tokens or 0
            made = list(self._calls.values())
            results = [
                await calls.called(c.mcp, c.item_id, c.arguments, opened=c.opened)
                for c in made
                if c.mcp is not None
            ]
            context += results
            if self._server_calls and self.tools is not None:
                # Server tools: their results are spoken by a continuation response.
                await self.tools.run_calls(list(self._server_calls.values()), self._say)
                break
            # The model goes on with what its MCP calls returned; a call the client runs,
            # or one waiting for the user's approval, ends the response as it does hosted.
            if (
                not results
                or len(results) < len(made)
                or any(r.type != "mcp_call" for r in results)
            ):
                break
            self._calls = {}
        usage = (
            tokens_in if done.input_tokens is not None else None,
            tokens_out if done.output_tokens is not None else None,
        )
        if done.finish_reason == "length":
            return "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}, usage
        return "completed", None, usage

    async def _text(self, splitter: SentenceSplitter, text: str) -> None:
        if not self.plan.audio:
            await self.post(lambda c: c.response_text(self.response_id, text))
            return
        for sentence in splitter.push(text):
            await self._speak(sentence)

    async def _say(self, text: str) -> None:
        """Words the server adds to the reply (a tool's filler), spoken or written."""
        if self.plan.audio:
            await self._speak(text)
        else:
            await self.post(lambda c: c.response_text(self.response_id, text))

    async def _speak(self, sentence: str) -> None:
        if not sentence:
            return
        rid, tts = self.response_id, self.engines.tts
        # The transcript piece goes out just before its audio, so a truncation can keep
        # exactly the words that were heard.
        over = False
        if self.max_speech_chars is not None:
            room = self.max_speech_chars - self._spoken_chars
            if room <= 0:
                raise _SpeechLimit
            over, sentence = len(sentence) > room, sentence[:room]
        self._spoken_chars += len(sentence)
        piece = (" " if self._spoken_any else "") + sentence
        self._spoken_any = True
        await self.post(lambda c: c.response_text(rid, piece))
        converter = OutputConverter(tts.sample_rate, AudioFormat.from_type(self.plan.output_format))
        voice, speed = self.plan.voice, self.plan.speed
        async with aclosing(tts.synthesize(sentence, voice=voice, speed=speed)) as chunks:
            async for pcm in chunks:
                await self._audio(converter.process(pcm))
        await self._audio(converter.flush())
        if over:
            raise _SpeechLimit

    async def _audio(self, data: bytes) -> None:
        if not data:
            return
        await self.media_space()
        if self.lead_s is not None:
            await self._pace()
            fmt = AudioFormat.from_type(self.plan.output_format)
            self._sent_s += fmt.bytes_to_ms(len(data)) / 1000
        await self.post(lambda c: c.response_audio(self.response_id, data))

    async def _pace(self) -> None:
        assert self.lead_s is not None
        now = self.clock.monotonic()
        if self._paced_from is None:
            self._paced_from = now
        ahead = self._paced_from + self._sent_s - self.lead_s - now
        if ahead > 0:
            await self.clock.sleep(ahead)

    async def _tool_call(self, splitter: SentenceSplitter, delta: ToolCallDelta) -> None:
        rid = self.response_id
        if self._server_call(delta):
            return
        if delta.index not in self._calls:
            await self._speak(splitter.flush())
            await self._close_call()
            call = _Call(new_id("item"), delta.call_id or new_id("call"), delta.name or "")
            call.mcp = self.plan.mcp.get(call.name)
            self._calls[delta.index] = call
            self._open_call = delta.index
            await self._open(call)
        call = self._calls[delta.index]
        if delta.arguments:
            item_id, args = call.item_id, delta.arguments
            call.arguments += args
            if call.mcp is None:
                await self.post(lambda c: c.response_call_arguments(rid, item_id, args))
            elif call.opened:
                await self.post(lambda c: mcp_flow.call_arguments(c, rid, item_id, args))

    async def _open(self, call: _Call) -> None:
        rid, fn = self.response_id, call.mcp
        if fn is None:
            await self.post(lambda c: c.response_call(rid, call.item_id, call.call_id, call.name))
        elif fn.allowed and fn.approval:
            call.opened = False  # an approval request may take its place
        else:
            label, name = fn.server.label, fn.tool.name
            await self.post(lambda c: mcp_flow.open_call(c, rid, call.item_id, label, name))

    def _server_call(self, delta: ToolCallDelta) -> bool:
        """Collect a server tool's call (True) instead of streaming it to the client."""
        call = self._server_calls.get(delta.index)
        if call is None:
            if delta.index in self._calls or self.tools is None:
                return False
            if not self.tools.intercepts(delta.name or ""):
                return False
            call = ServerCall(delta.call_id or new_id("call"), delta.name or "")
            self._server_calls[delta.index] = call
        call.arguments += delta.arguments or ""
        return True

    async def _close_call(self) -> None:
        if self._open_call is None:
            return
        call = self._calls[self._open_call]
        item_id, rid = call.item_id, self.response_id
        self._open_call = None
        if call.mcp is None:
            await self.post(lambda c: c.response_call_done(rid, item_id))
        elif call.opened:
            await self.post(lambda c: mcp_flow.call_arguments_done(c, rid, item_id))


class _SpeechLimit(Exception):
    """The response reached its bound on text handed to speech synthesis."""


def _error_kind(exc: EngineError) -> tuple[str, str]:
    """The error code and type a failed response reports: an over-long context is the
    client's to fix; any other engine failure is ours."""
    if isinstance(exc, ContextTooLong):
        return exc.code, "invalid_request_error"
    return f"{exc.origin}_error", "server_error"


def _failure(message: str, code: str, kind: str) -> dict[str, Any]:
    return {"type": "failed", "error": {"type": kind, "code": code, "message": message}}
