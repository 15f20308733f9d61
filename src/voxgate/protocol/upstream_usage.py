"""Usage read off an upstream Realtime service's server events, sans-IO.

Where another Realtime service does the work (a call in direct mode, watched through
voxgate's own sideband connection), the books are kept from what that service reports: each
``response.done`` becomes a `ResponseFinished` with the response's usage and the assistant's
words, each finished input transcription a `UserInput` with its seconds of speech. The same
records the embedded pipeline emits, so the ledger and budgets treat both alike.

The session's configuration as the upstream holds it (``session.created`` /
``session.updated``) says which model and which transcription model the usage is priced by.
"""

from __future__ import annotations

from typing import Any

from .commands import ResponseFinished, Usage, UserInput

UpstreamRecord = ResponseFinished | UserInput


def _int(obj: Any, *path: str) -> int:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else 0


def usage_of(wire: Any) -> Usage:
    """A ``response.done`` usage object (the hosted API's shape) as a `Usage`; missing or
    malformed counts are zero."""
    return Usage(
        input_text_tokens=_int(wire, "input_token_details", "text_tokens"),
        input_audio_tokens=_int(wire, "input_token_details", "audio_tokens"),
        cached_tokens=_int(wire, "input_token_details", "cached_tokens"),
        output_text_tokens=_int(wire, "output_token_details", "text_tokens"),
        output_audio_tokens=_int(wire, "output_token_details", "audio_tokens"),
    )


def words_of(item: Any) -> str:
    """The words of an assistant message item: its text, or its audio's transcript."""
    if not isinstance(item, dict):
        return ""
    words = []
    for part in item.get("content") or []:
        if isinstance(part, dict):
            text = part.get("text") if part.get("type") == "output_text" else part.get("transcript")
            if isinstance(text, str) and text:
                words.append(text)
    return " ".join(words)


class UpstreamUsage:
    """Feed it the upstream's server events (parsed JSON) in order; it returns the usage
    records they carry."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.transcription_model: str | None = None

    def feed(self, event: dict[str, Any]) -> list[UpstreamRecord]:
        match event.get("type"):
            case "session.created" | "session.updated":
                self._configured(event.get("session"))
            case "response.done":
                return self._response(event.get("response"))
            case "conversation.item.input_audio_transcription.completed":
                return self._transcribed(event)
        return []

    def _configured(self, session: Any) -> None:
        if not isinstance(session, dict):
            return
        if isinstance(model := session.get("model"), str) and model:
            self.model = model
        audio = session.get("audio")
        if isinstance(audio, dict) and isinstance(audio.get("input"), dict):
            transcription = audio["input"].get("transcription")
            model = transcription.get("model") if isinstance(transcription, dict) else None
            self.transcription_model = model if isinstance(model, str) else None

    def _response(self, response: Any) -> list[UpstreamRecord]:
        if not isinstance(response, dict):
            return []
        messages = tuple(
            (str(item.get("id") or ""), words_of(item))
            for item in response.get("output") or []
            if isinstance(item, dict) and item.get("type") == "message"
        )
        return [
            ResponseFinished(
                response_id=str(response.get("id") or ""),
                status=str(response.get("status") or ""),
                model=self.model,
                usage=usage_of(response.get("usage")),
                messages=messages,
            )
        ]

    def _transcribed(self, event: dict[str, Any]) -> list[UpstreamRecord]:
        usage = event.get("usage")
        seconds = 0.0
        if isinstance(usage, dict) and usage.get("type") == "duration":
            raw = usage.get("seconds")
            seconds = float(raw) if isinstance(raw, int | float) else 0.0
        transcript = event.get("transcript")
        return [
            UserInput(
                item_id=str(event.get("item_id") or ""),
                text=transcript if isinstance(transcript, str) else "",
                audio_seconds=seconds,
                transcription_model=self.transcription_model or "",
            )
        ]
