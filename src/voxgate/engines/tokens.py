"""Token counting for usage accounting and output limits.

The count uses tiktoken's ``o200k_base`` encoding (the one the current OpenAI models use), so
numbers line up with what a hosted API would bill. tiktoken does not ship its encoding files:
it downloads them on first use and caches them (``TIKTOKEN_CACHE_DIR``, default
``$TMPDIR/data-gym-cache``). voxgate never downloads at run time: it uses the encoding only
when a cached copy is already there (put one there to get exact counts), and otherwise counts
by approximation: one token per 4 characters, and at least one per word. That is close to
real BPE counts for English prose and never undercounts short words.

``counting_method()`` says which one is in use, so usage reports can say how exact they are.
Loading happens once, on first use; call ``load()`` at startup (in a thread) so that the first
count on the event loop does not wait for a download attempt.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger(__name__)

ENCODING_NAME = "o200k_base"
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
CHARS_PER_TOKEN = 4

CountingMethod = Literal["tiktoken", "approximate"]


class Encoding(Protocol):
    """The part of ``tiktoken.Encoding`` we use."""

    def encode_ordinary(self, text: str) -> list[int]: ...


def approximate_tokens(text: str) -> int:
    """Estimate tokens without an encoding: ~4 characters per token, at least one per word."""
    return max(math.ceil(len(text) / CHARS_PER_TOKEN), len(text.split()))


class NotCached(Exception):
    """The encoding file is not in tiktoken's cache, and voxgate does not download it."""


def cached_encoding_path() -> Path:
    """Where tiktoken keeps its copy of ``o200k_base`` (named by the URL's SHA-1)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = folder or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(folder) / hashlib.sha1(ENCODING_URL.encode()).hexdigest()


def _load_o200k() -> Encoding:
    cached = cached_encoding_path()
    if not cached.is_file():
        raise NotCached(f"{ENCODING_NAME} is not in tiktoken's cache ({cached})")
    import tiktoken

    return tiktoken.get_encoding(ENCODING_NAME)


class TokenCounter:
    """Counts tokens with an encoding loaded lazily, once; approximates if it cannot load."""

    def __init__(self, load: Callable[[], Encoding] = _load_o200k) -> None:
        self._load = load
        self._encoding: Encoding | None = None
        self._loaded = False
        # Sessions may count from worker threads as well as the loop; load exactly once.
        self._lock = threading.Lock()

    def load(self) -> CountingMethod:
        """Load the encoding now (idempotent) and return the counting method in use."""
        with self._lock:
            if not self._loaded:
                self._encoding = self._try_load()
                self._loaded = True
        return "tiktoken" if self._encoding is not None else "approximate"

    def _try_load(self) -> Encoding | None:
        try:
            return self._load()
        except NotCached:
            return None  # the expected case offline: ``describe`` says so, in one line
        except Exception as exc:  # a damaged cached file: tiktoken's file and hash errors
            log.warning("tiktoken cannot load its cached %s: %s", ENCODING_NAME, exc)
            return None

    @property
    def method(self) -> CountingMethod:
        """How counts are made: "tiktoken" (exact) or "approximate"; loads on first use."""
        return self.load()

    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""
        if not text:
            return 0
        self.load()
        if self._encoding is None:
            return approximate_tokens(text)
        return len(self._encoding.encode_ordinary(text))


_default = TokenCounter()


def count_tokens(text: str) -> int:
    """Number of ``o200k_base`` tokens in ``text`` (approximate when tiktoken is unavailable)."""
    return _default.count(text)


def counting_method() -> CountingMethod:
    """How ``count_tokens`` counts: "tiktoken" (exact) or "approximate"."""
    return _default.method


def load() -> CountingMethod:
    """Load the encoding now; call at startup, off the event loop, to avoid a first-use stall."""
    return _default.load()


def describe(method: CountingMethod) -> str:
    """One line for the start-up log: how tokens are counted."""
    if method == "tiktoken":
        return f"token counting: tiktoken {ENCODING_NAME} (cached copy)"
    return (
        f"token counting: approximate, ~{CHARS_PER_TOKEN} characters per token (offline: no "
        f"cached {ENCODING_NAME}; put tiktoken's file at {cached_encoding_path()} for exact "
        "counts)"
    )
