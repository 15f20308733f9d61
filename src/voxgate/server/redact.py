"""Keys never reach the logs: query strings in logged URLs keep only the parameters the API
defines; every other value (a key a client put in the URL, say) is replaced."""

from __future__ import annotations

import logging
import re

# Query parameters of voxgate's routes; their values are safe to log.
SAFE_PARAMS = frozenset({"model", "call_id", "intent"})
_QUERY_PARAM = re.compile(r"([?&])([^=&#\s\"]*)=([^&#\s\"]*)")
REDACTED = "[redacted]"


def redact_url(text: str) -> str:
    """``text`` with the values of query parameters outside `SAFE_PARAMS` redacted."""
    if "?" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        return match.group(0) if name in SAFE_PARAMS else f"{sep}{name}={REDACTED}"

    return _QUERY_PARAM.sub(replace, text)


class RedactQueries(logging.Filter):
    """A filter for uvicorn's loggers, which log request paths with their query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True


def install() -> None:
    """Redact the loggers that write request URLs (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueries) for f in logger.filters):
            logger.addFilter(RedactQueries())
