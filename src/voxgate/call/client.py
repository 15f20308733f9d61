"""The call itself: one connection, the microphone, the server's events, and the result."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from ..session.clock import Clock, SystemClock
from .connection import open_connection, realtime_url
from .microphone import Microphone
from .options import BYTES_PER_SECOND, WIRE_RATE, CallError, CallOptions
from .printer import Printer, describe_event, print_summary
from .result import CallResult
from .speech import load_speech
from .wav import check_writable, save_wav

# Any name works on voxgate; this one is also valid on OpenAI's own endpoint.
TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
_AUTH_ERROR_CODES = frozenset({"invalid_api_key", "missing_api_key"})


async def run_call(options: CallOptions, out: TextIO, *, clock: Clock | None = None) -> CallResult:
    """Make one call as ``options`` say, printing its progress to ``out``."""
    printer = Printer(out, options.verbosity)
    try:
        check_writable(options.out)
        speech = await load_speech(options)
    except CallError as exc:
        return CallResult(error=str(exc))
    url = realtime_url(options.url, options.model)
    mode = options.turn_detection
    printer.say(f"calling {url} with {len(speech) / BYTES_PER_SECOND:.1f} s of audio ({mode})")
    call = _Call(options, speech, printer, clock or SystemClock())
    try:
        ws = await open_connection(url, options)
        try:
            await call.run(ws)
        finally:
            await ws.close()
    except CallError as exc:
        call.finish(str(exc))
    result = call.result()
    if result.reply_audio:
        try:
            save_wav(options.out, result.reply_audio)
            result.saved_to = options.out
        except CallError as exc:
            result.error = result.error or str(exc)
    print_summary(printer, result)
    return result


@dataclass
class _Response:
    id: str
    status: str | None = None
    usage: dict[str, Any] | None = None
    audio: bytearray = field(default_factory=bytearray)
    transcript: list[str] = field(default_factory=list)
    first_audio_at: float | None = None


class _Call:
    """One call's state, fed by server events and the microphone; ``finish`` ends it.

    The call is over when the user's audio has all been sent, the server does not think the
    user is speaking, and a response made after the last speech it heard is done (one cut
    short because more speech followed does not count). Then, if a transcript of the user's
    audio is still owed, it waits ``transcript_grace_s`` more for it.
    """

    def __init__(self, options: CallOptions, speech: bytes, printer: Printer, clock: Clock) -> None:
        self.options = options
        self._speech = speech
        self._printer = printer
        self._clock = clock
        self._result = CallResult(speech_s=len(speech) / BYTES_PER_SECOND)
        self._responses: dict[str, _Response] = {}
        self._final: _Response | None = None
        self._configured = asyncio.Event()
        self._finished = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._playing = False
        self._played = False
        self._speech_end: float | None = None
        self._speaking = False  # the server says the user is speaking
        self._heard_speech = False
        self._replied = False  # a response to the latest speech is done
        self._waiting_for_transcript = False
        self._committed: list[str] = []
        self._transcribed: set[str] = set()
        self._last_activity = clock.monotonic()

    async def run(self, ws: ClientConnection) -> None:
        async def send(event: dict[str, Any]) -> None:
            if event["type"] != "input_audio_buffer.append":
                self._printer.say(f"> {event['type']}", "verbose")
            await ws.send(json.dumps(event))

        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._spawn(self._receive(ws), "receive")
            mic = Microphone(send, self._clock, self.options.chunk_ms)
            self._spawn(self._talk(mic), "talk")
            self._spawn(self._watch(), "watchdog")
            await self._finished.wait()
            for task in self._tasks:
                task.cancel()

    def finish(self, error: str | None = None) -> None:
        """End the call (the first call wins), with ``error`` if it failed."""
        if self._finished.is_set():
            return
        self._result.error = error
        self._finished.set()

    def result(self) -> CallResult:
        result = self._result
        reply = self._final or next(
            (r for r in reversed(self._responses.values()) if r.audio), None
        )
        if reply is not None:
            result.response_id, result.response_status = reply.id, reply.status
            result.usage = reply.usage
            result.assistant_transcript = "".join(reply.transcript)
            result.reply_audio = bytes(reply.audio)
            if reply.first_audio_at is not None and self._speech_end is not None:
                result.latency_s = reply.first_audio_at - self._speech_end
        return result

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tg is not None
        self._tasks.append(self._tg.create_task(coro, name=f"voxgate-call:{name}"))

    def _session_update(self) -> dict[str, Any]:
        mode = self.options.turn_detection
        audio_format = {"type": "audio/pcm", "rate": WIRE_RATE}
        return {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": audio_format,
                        "transcription": {"model": TRANSCRIPTION_MODEL},
                        "turn_detection": None if mode == "none" else {"type": mode},
                    },
                    "output": {"format": audio_format},
                },
            },
        }

    # -- tasks ----------------------------------------------------------------------------

    async def _talk(self, mic: Microphone) -> None:
        """Configure the session, then speak; in VAD modes go on with silence."""
        try:
            await mic.send(self._session_update())
            await self._configured.wait()
            self._playing = True
            await mic.play(self._speech)
            self._end_of_speech()
            if self.options.turn_detection == "none":
                await mic.send({"type": "input_audio_buffer.commit"})
                await mic.send({"type": "response.create"})
            else:
                await mic.silence_forever()
        except ConnectionClosed:
            # The receiving task reads what the server sent before closing (often an error
            # event saying why) and reports it.
            pass

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._on_message(raw)
        except ConnectionClosedError:
            pass
        code, reason = ws.close_code, ws.close_reason
        why = f"code {code}" + (f", {reason}" if reason else "") if code is not None else "no code"
        self.finish(f"the server closed the connection ({why}) before the reply was complete")

    async def _watch(self) -> None:
        """Fail the call when the server has been silent for ``timeout_s`` (not counting
        the time the user's audio is being played: a quiet server is normal then)."""
        timeout = self.options.timeout_s
        while True:
            now = self._clock.monotonic()
            quiet_since = now if self._playing else self._last_activity
            if now >= quiet_since + timeout:
                self.finish(self._timeout_message())
                return
            await self._clock.sleep(quiet_since + timeout - now)

    async def _wait_for_transcript(self) -> None:
        await self._clock.sleep(self.options.transcript_grace_s)
        self._printer.say("[no transcript of your audio arrived]")
        self.finish()

    def _timeout_message(self) -> str:
        waited = f"nothing came back from the server in {self.options.timeout_s:g} s"
        if not self._configured.is_set():
            return f"{waited} (it did not confirm the session settings with session.updated)"
        message = f"{waited} after the end of your audio (no response.done)"
        if self.options.turn_detection != "none" and not self._heard_speech:
            message += (
                "; it never reported hearing your speech (no input_audio_buffer."
                "speech_started): if it has no turn detection, try --turn-detection none"
            )
        return message

    def _end_of_speech(self) -> None:
        self._playing, self._played = False, True
        self._speech_end = self._last_activity = self._clock.monotonic()
        self._printer.say(f"[end of your audio after {self._result.speech_s:.2f} s]")
        if self.options.turn_detection == "none":
            self._printer.say("[committing it and asking for a response]")
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not (self._played and self._replied and not self._speaking):
            return
        if not set(self._committed) <= self._transcribed:
            if not self._waiting_for_transcript:
                self._waiting_for_transcript = True
                self._spawn(self._wait_for_transcript(), "transcript-grace")
            return
        self.finish()

    # -- server events --------------------------------------------------------------------

    def _on_message(self, raw: str | bytes) -> None:
        self._last_activity = self._clock.monotonic()
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._printer.say(f"ignoring a message that is not a Realtime event: {raw[:80]!r}")
            return
        self._result.events.append(event["type"])
        self._printer.say(describe_event(event), "verbose")
        self._handle(event["type"], event)

    def _handle(self, kind: str, event: dict[str, Any]) -> None:
        match kind:
            case "session.created":
                session = event.get("session") or {}
                self._result.session_id = session.get("id")
                model = f" (model {session['model']})" if session.get("model") else ""
                self._printer.say(f"connected: session {session.get('id')}{model}")
            case "session.updated":
                self._configured.set()
            case "error":
                self._on_error(event.get("error") or {})
            case "input_audio_buffer.speech_started":
                self._speaking = self._heard_speech = True
                self._replied = False
                self._printer.say(f"[speech started at {_seconds(event, 'audio_start_ms')}]")
            case "input_audio_buffer.speech_stopped":
                self._speaking = False
                self._printer.say(f"[speech stopped at {_seconds(event, 'audio_end_ms')}]")
            case "input_audio_buffer.committed":
                self._committed.append(str(event.get("item_id")))
            case "conversation.item.input_audio_transcription.completed":
                transcript = str(event.get("transcript") or "").strip()
                self._result.user_transcripts.append(transcript)
                self._printer.say(f"you: {transcript}", "quiet")
                self._transcribed.add(str(event.get("item_id")))
                self._maybe_done()
            case "conversation.item.input_audio_transcription.failed":
                error = event.get("error") or {}
                self._printer.say(f"you: (not transcribed: {error.get('message')})", "quiet")
                self._transcribed.add(str(event.get("item_id")))
                self._maybe_done()
            case "response.output_audio_transcript.delta" | "response.output_text.delta":
                self._response(event).transcript.append(str(event.get("delta", "")))
                self._printer.stream("assistant: ", str(event.get("delta", "")))
            case "response.output_audio_transcript.done":
                self._printer.stream_done("assistant: ", str(event.get("transcript", "")))
            case "response.output_text.done":
                self._printer.stream_done("assistant: ", str(event.get("text", "")))
            case "response.output_audio.delta":
                self._on_audio(self._response(event), event.get("delta"))
            case "response.done":
                self._on_response_done(event.get("response") or {})
            case _:
                pass  # everything else is shown by --verbose only

    def _response(self, event: dict[str, Any]) -> _Response:
        rid = str(event.get("response_id") or (event.get("response") or {}).get("id"))
        return self._responses.setdefault(rid, _Response(rid))

    def _on_audio(self, response: _Response, delta: Any) -> None:
        try:
            response.audio += base64.b64decode(str(delta), validate=True)
        except (binascii.Error, ValueError):
            self.finish("the server sent reply audio that is not valid base64")
            return
        if response.first_audio_at is None:
            response.first_audio_at = self._clock.monotonic()

    def _on_response_done(self, wire: dict[str, Any]) -> None:
        self._printer.end_stream()
        response = self._response({"response": wire})
        response.status, response.usage = wire.get("status"), wire.get("usage")
        details = wire.get("status_details") or {}
        if response.status == "cancelled" and details.get("reason") == "turn_detected":
            self._printer.say(f"[reply {response.id} cut short: you spoke again]")
            return
        self._final = response
        if response.status == "failed":
            error = details.get("error") or {}
            self.finish(f"the reply failed: {error.get('message') or details}")
            return
        if response.status == "cancelled":
            self.finish(f"the reply was cancelled ({details.get('reason') or 'no reason given'})")
            return
        self._replied = True
        self._maybe_done()

    def _on_error(self, error: dict[str, Any]) -> None:
        message, code = error.get("message") or "(no message)", error.get("code")
        tag = f" [{code}]" if code else ""
        if code in _AUTH_ERROR_CODES:
            self.finish(
                f"the server refused the API key: {message}{tag}. Pass the right one with "
                "--api-key or the VOXGATE_API_KEY environment variable."
            )
        else:
            self.finish(f"the server sent an error: {message}{tag}")


def _seconds(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    return f"{value / 1000:.2f} s" if isinstance(value, int | float) else "?"
