"""Word error rate arithmetic."""

from __future__ import annotations

import pytest

from voxgate.engines.wer import edit_distance, word_error_rate, words


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Hello, World! It's me.") == ["hello", "world", "it's", "me"]


def test_numbers_are_spelled_out() -> None:
    assert words("Table for 4 at 7:30, room 115") == [
        "table", "for", "four", "at", "seven", "thirty", "room", "one", "hundred", "fifteen",
    ]
    assert words("1,250 people") == ["one", "thousand", "two", "hundred", "fifty", "people"]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits"),
    [
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),  # substitution
        ("a b c", "a c", 1),  # deletion
        ("a b c", "a b c d", 1),  # insertion
        ("a b c", "", 3),
        ("", "a b", 2),
    ],
)
def test_edit_distance(reference: str, hypothesis: str, edits: int) -> None:
    assert edit_distance(words(reference), words(hypothesis)) == edits


def test_corpus_rate_weighs_by_reference_length() -> None:
    # 1 error in 4 words plus 1 error in 1 word: 2/5, not the mean of 1/4 and 1.
    assert word_error_rate([("a b c d", "a b c x"), ("e", "f")]) == pytest.approx(0.4)


def test_an_empty_reference_corpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reference words"):
        word_error_rate([("", "x")])
