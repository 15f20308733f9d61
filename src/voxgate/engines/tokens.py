"""Token counting for usage accounting and output limits.

The count uses tiktoken's ``o200k_base`` encoding (the one the current OpenAI models use), so
numbers line up with what a hosted API would bill. tiktoken does not ship its encoding files:
it downloads them on first use and caches them (``TIKTOKEN_CACHE_DIR``, default
``$TMPDIR/data-gym-cache``). On a machine that is offline and has no cached copy, counting
falls back to an approximation: one token per 4 characters, and at least one per word. That is
close to real BPE counts for English prose and never undercounts short words.

``counting_method()`` says which one is in use, so usage reports can say how exact they are.
Loading happens once, on first use; call ``load()`` at startup (in a thread) so that the first
count on the event loop does not wait for a download attempt.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Literal, Protocol

log = logging.getLogger(__name__)

ENCODING_NAME = "o200k_base"
CHARS_PER_TOKEN = 4

CountingMethod = Literal["tiktoken", "approximate"]


class Encoding(Protocol):
    """The part of ``tiktoken.Encoding`` we use."""

    def encode_ordinary(self, text: str) -> list[int]: ...


def approximate_tokens(text: str) -> int:
    """Estimate tokens without an encoding: ~4 characters per token, at least one per word."""
    return max(math.ceil(len(text) / CHARS_PER_TOKEN), len(text.split()))


def _load_o200k() -> Encoding:
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
        except Exception as exc:  # tiktoken raises network, file and hash errors alike
            log.warning(
                "tiktoken cannot load %s (%s); token counts are approximate "
                "(~%d characters per token)",
                ENCODING_NAME,
                exc,
                CHARS_PER_TOKEN,
            )
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
