"""Total JSON decoding for client input: any text gives a value or a `ProtocolError`, never
an exception.

Two things `json.loads` lets through that later crash far from the door are refused here:
- nesting deeper than `MAX_JSON_DEPTH` (pydantic, the session rules and `json` itself recurse,
  and ~1,000 levels end in `RecursionError`);
- strings that cannot be encoded as UTF-8 (JSON may spell lone surrogates, ``"\\ud800"``);
  echoed back in an event, they would fail only when the reply is serialised.

Both checks cost one walk over the decoded value, and only when the text could hold such a
thing (more brackets than the depth limit, or a ``\\u`` escape), so ordinary events — audio
appends above all — pay two substring scans.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProtocolError

# Deep enough for any tool's JSON Schema people write; far from Python's recursion limit.
MAX_JSON_DEPTH = 64


def load_json(raw: str, *, where: str = "The event", prefix: str = "") -> Any:
    """Decode ``raw`` or raise ProtocolError (``invalid_json`` / ``invalid_value``, with the
    path of the offending field after ``prefix``)."""
    data, error = parse_json(raw, where=where, prefix=prefix)
    if error is not None:
        raise error
    return data


def parse_json(
    raw: str, *, where: str = "The event", prefix: str = ""
) -> tuple[Any, ProtocolError | None]:
    """Like `load_json`, but returns (value, error): when the text parsed but a value in it is
    refused, the value comes back too, so a caller can still read e.g. the ``event_id``."""
    try:
        data = json.loads(raw)
    except RecursionError:
        return None, _too_deep(where, prefix)
    except ValueError as exc:
        return None, ProtocolError(
            f"{where} is not valid JSON: {exc}. Send one JSON object per message.",
            code="invalid_json",
            param=prefix or None,
        )
    deep = raw.count("{") + raw.count("[") > MAX_JSON_DEPTH
    escaped = "\\u" in raw or not raw.isascii()
    if deep or escaped:
        try:
            check_value(data, where=where, prefix=prefix)
        except ProtocolError as exc:
            return data, exc
    return data, None


def check_value(data: Any, *, where: str = "The event", prefix: str = "") -> None:
    """Raise ProtocolError if ``data`` nests deeper than the limit or holds a string that
    cannot be encoded. Iterative, so it cannot itself run out of stack."""
    stack: list[tuple[Any, str, int]] = [(data, prefix, 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(where, path)
            if isinstance(value, dict):
                for key, child in value.items():
                    _check_text(key, path)
                    stack.append((child, f"{path}.{key}" if path else key, depth + 1))
            else:
                for i, child in enumerate(value):
                    stack.append((child, f"{path}[{i}]", depth + 1))


def readable_event_id(data: dict[str, Any]) -> str | None:
    """The client's ``event_id`` if it can be echoed back (a string of encodable text)."""
    event_id = data.get("event_id")
    if not isinstance(event_id, str):
        return None
    try:
        _check_text(event_id, "event_id")
    except ProtocolError:
        return None
    return event_id


def _check_text(value: str, path: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(
            f"Invalid value for '{path or 'event'}': the string holds an unpaired UTF-16 "
            f"surrogate ({value[exc.start]!r} at position {exc.start}), which is not valid "
            "Unicode text. Send UTF-8 text (escape characters outside the Basic "
            "Multilingual Plane as surrogate pairs).",
            code="invalid_value",
            param=path or None,
        ) from None


def _too_deep(where: str, path: str) -> ProtocolError:
    return ProtocolError(
        f"{where} nests JSON objects or arrays deeper than {MAX_JSON_DEPTH} levels"
        + (f" (at '{path}')" if path else "")
        + "; flatten it.",
        code="invalid_value",
        param=path or None,
    )
