"""What the books need from an upstream's server events: the same typed records the embedded
pipeline emits (`ResponseFinished`, `UserInput`), built from ``response.done`` and a
transcription's ``completed`` event. Pure functions of the decoded events."""

from __future__ import annotations

from typing import Any

from ..protocol.commands import ResponseFinished, Usage, UserInput


def _int(tree: Any, key: str) -> int:
    value = tree.get(key) if isinstance(tree, dict) else None
    return value if isinstance(value, int) else 0


def response_finished(event: dict[str, Any], model: str) -> ResponseFinished | None:
    """The record of a ``response.done`` (None when it names no response)."""
    response = event.get("response")
    if not isinstance(response, dict) or not isinstance(response.get("id"), str):
        return None
    usage = response.get("usage") or {}
    inputs = usage.get("input_token_details") if isinstance(usage, dict) else None
    outputs = usage.get("output_token_details") if isinstance(usage, dict) else None
    if isinstance(inputs, dict):
        input_text, input_audio = _int(inputs, "text_tokens"), _int(inputs, "audio_tokens")
    else:  # no breakdown: count it all as text
        input_text, input_audio = _int(usage, "input_tokens"), 0
    if isinstance(outputs, dict):
        output_text, output_audio = _int(outputs, "text_tokens"), _int(outputs, "audio_tokens")
    else:
        output_text, output_audio = _int(usage, "output_tokens"), 0
    return ResponseFinished(
        response_id=response["id"],
        status=str(response.get("status") or "completed"),
        model=model,
        usage=Usage(
            input_text_tokens=input_text,
            input_audio_tokens=input_audio,
            cached_tokens=_int(inputs, "cached_tokens"),
            output_text_tokens=output_text,
            output_audio_tokens=output_audio,
        ),
        messages=tuple(_said(response.get("output"))),
    )


def _said(output: Any) -> list[tuple[str, str]]:
    """(item id, words) of each assistant message of a response's output."""
    said: list[tuple[str, str]] = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        parts: list[Any] = content if isinstance(content, list) else []
        words = " ".join(
            str(p.get("transcript") or p.get("text") or "") for p in parts if isinstance(p, dict)
        ).strip()
        if words and isinstance(item.get("id"), str):
            said.append((item["id"], words))
    return said


def transcription_done(event: dict[str, Any], model: str) -> UserInput | None:
    """The record of ``conversation.item.input_audio_transcription.completed``. Seconds of
    audio come from a ``duration`` usage; a ``tokens`` usage carries none (the upstream
    bills those by tokens, which the transcription rows do not hold)."""
    item_id, text = event.get("item_id"), event.get("transcript")
    if not isinstance(item_id, str):
        return None
    usage = event.get("usage")
    seconds = 0.0
    if isinstance(usage, dict) and usage.get("type") == "duration":
        value = usage.get("seconds")
        seconds = float(value) if isinstance(value, int | float) else 0.0
    return UserInput(item_id, str(text or ""), seconds, model)


def transcription_model(session: dict[str, Any]) -> str | None:
    """The transcription model of an upstream session object (None: not transcribing)."""
    audio = session.get("audio")
    inputs = audio.get("input") if isinstance(audio, dict) else None
    transcription = inputs.get("transcription") if isinstance(inputs, dict) else None
    if not isinstance(transcription, dict):
        return None
    model = transcription.get("model")
    return model if isinstance(model, str) else None


def response_id_of(event: dict[str, Any]) -> str | None:
    """The response an event belongs to (its own field, or the response object's id)."""
    rid = event.get("response_id")
    if isinstance(rid, str):
        return rid
    response = event.get("response")
    if isinstance(response, dict) and isinstance(response.get("id"), str):
        return str(response["id"])
    return None
