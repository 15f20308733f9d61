"""Word error rate: how far a transcript is from what was said.

Used by the tests and ``bench/`` to measure speech-to-text engines. Text is compared as
lower-case words with punctuation dropped and numbers spelled out, so "Hello, world." equals
"hello world" and "4 people" equals "four people".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-z0-9']+")
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, numbers spelled out ("4" and "four" match:
    recognisers write numbers either way)."""
    out: list[str] = []
    for word in _WORD.findall(text.lower().replace(",", "")):
        out += spell_number(int(word)) if word.isdigit() and len(word) <= 4 else [word]
    return out


def spell_number(n: int) -> list[str]:
    """0–9999 in words, as they are spoken ("one hundred twenty three")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        rest = spell_number(n % 100) if n % 100 else []
        return [_ONES[n // 100], "hundred", *rest]
    rest = spell_number(n % 1000) if n % 1000 else []
    return [*spell_number(n // 1000), "thousand", *rest]


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
