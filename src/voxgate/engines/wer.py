"""Word error rate: how far a transcript is from what was said.

Used by the tests and ``bench/`` to measure speech-to-text engines. Text is compared as
lower-case words with punctuation dropped, so "Hello, world." equals "hello world".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Fewest substitutions, deletions and insertions turning ``reference`` into
    ``hypothesis`` (Levenshtein over words)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER over ``(reference, hypothesis)`` pairs: total edits over total reference
    words, so long sentences weigh more than short ones."""
    errors = total = 0
    for reference, hypothesis in pairs:
        ref = words(reference)
        errors += edit_distance(ref, words(hypothesis))
        total += len(ref)
    if total == 0:
        raise ValueError("no reference words to score against")
    return errors / total
