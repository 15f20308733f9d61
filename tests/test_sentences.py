"""How streamed text is cut into pieces to speak: a short first piece, then sentences."""

from __future__ import annotations

from voxgate.session.sentences import SentenceSplitter


def split(*chunks: str) -> list[str]:
    splitter = SentenceSplitter()
    pieces = [p for chunk in chunks for p in splitter.push(chunk)]
    rest = splitter.flush()
    return [*pieces, rest] if rest else pieces



def test_first_piece_is_a_clause_of_two_words_or_more() -> None:
    pieces = split("Of course, the bank opens at nine tomorrow morning. It closes at five. ")
    assert pieces == [
        "Of course,",
        "the bank opens at nine tomorrow morning.",
        "It closes at five.",
    ]


def test_first_piece_is_cut_after_a_few_words_without_punctuation() -> None:
    words = "the weather in Paris is sunny and warm today with a light breeze. Then rain. "
    pieces = split(*(w + " " for w in words.split()))
    assert pieces[0] == "the weather in Paris is sunny"
    assert pieces[1:] == ["and warm today with a light breeze.", "Then rain."]


def test_first_piece_waits_for_whole_words() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Hello there, my fri") == ["Hello there,"]
    assert splitter.push("end. How") == ["my friend."]
    assert splitter.flush() == "How"


def test_one_word_sentence_joins_the_next() -> None:
    assert split("Hi. How are you doing today? Fine. ") == [
        "Hi. How are you doing today?",
        "Fine.",
    ]


def test_short_answer_is_flushed_whole() -> None:
    assert split("Yes") == ["Yes"]


def test_later_sentences_are_whole_and_long_ones_break_at_a_comma() -> None:
    long = "a" * 70 + ", " + "b" * 70 + " "
    pieces = split("All right, so. ", long)
    assert pieces[0] == "All right,"
    assert pieces[1] == "so."
    assert pieces[2] == "a" * 70 + ","
