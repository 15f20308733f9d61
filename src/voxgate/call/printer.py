"""What the user sees of a call: its progress as it happens, and a summary at the end."""

from __future__ import annotations

from typing import Any, TextIO

from .options import LEVELS, Verbosity
from .result import CallResult


class Printer:
    """The call's progress: a line per happening, and the assistant's words as they stream.

    Every line has a level: "quiet" lines (what was said) always show, "normal" ones (speech
    events, the summary) unless --quiet, "verbose" ones (every event) only with --verbose.
    """

    def __init__(self, out: TextIO, verbosity: Verbosity) -> None:
        self._out = out
        self._level = LEVELS[verbosity]
        self._open_prefix: str | None = None

    def say(self, text: str, level: Verbosity = "normal") -> None:
        if LEVELS[level] <= self._level:
            self.end_stream()
            self._write(text + "\n")

    def stream(self, prefix: str, delta: str) -> None:
        """Continue the line that begins with ``prefix``. With --verbose, every delta is on
        its own event line already, so the text comes whole from ``stream_done``."""
        if self._level >= LEVELS["verbose"]:
            return
        if self._open_prefix != prefix:
            self.end_stream()
            self._write(prefix)
            self._open_prefix = prefix
        self._write(delta)

    def stream_done(self, prefix: str, text: str) -> None:
        if self._level >= LEVELS["verbose"]:
            self.say(prefix + text, "verbose")
        self.end_stream()

    def end_stream(self) -> None:
        if self._open_prefix is not None:
            self._open_prefix = None
            self._write("\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def describe_event(event: dict[str, Any]) -> str:
    """One event as a --verbose line."""
    kind = event["type"]
    if kind == "response.output_audio.delta":
        return f"< {kind} ({len(str(event.get('delta', ''))) * 3 // 4} bytes)"
    if kind.endswith(".delta") and isinstance(event.get("delta"), str):
        return f"< {kind} {event['delta']!r}"
    if kind == "error":
        return f"< error {event.get('error')}"
    return f"< {kind}"


def print_summary(printer: Printer, result: CallResult) -> None:
    printer.end_stream()
    if result.response_id is not None:
        printer.say(f"reply {result.response_id}: {result.response_status}")
    if result.usage:
        printer.say(f"usage: {_describe_usage(result.usage)}")
    if result.saved_to is not None:
        printer.say(f"reply audio: {result.reply_s:.2f} s saved to {result.saved_to}")
    elif result.response_id is not None:
        printer.say("reply audio: none (nothing saved)")
    if result.latency_s is not None:
        when = "after" if result.latency_s >= 0 else "before"
        printer.say(
            f"latency: first reply audio {abs(result.latency_s):.2f} s {when} the end of your audio"
        )


def _describe_usage(usage: dict[str, Any]) -> str:
    def split(tokens: Any, details: Any) -> str:
        details = details if isinstance(details, dict) else {}
        parts = [
            f"{k.removesuffix('_tokens')} {v}"
            for k, v in details.items()
            if k.endswith("_tokens") and k != "cached_tokens" and v
        ]
        return f"{tokens}" + (f" ({', '.join(parts)})" if parts else "")

    inputs = split(usage.get("input_tokens"), usage.get("input_token_details"))
    outputs = split(usage.get("output_tokens"), usage.get("output_token_details"))
    return f"{usage.get('total_tokens')} tokens: input {inputs}, output {outputs}"
