"""The turn detector on its own: probabilities in, decisions out, in audio milliseconds."""

from __future__ import annotations

import pytest

from voxgate.protocol.session import SemanticVad, ServerVad
from voxgate.session.turns import (
    EAGERNESS_WAIT_MS,
    IdleTimeout,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    completeness,
    semantic_wait_ms,
)

WINDOW = 32.0


def run(detector: TurnDetector, pattern: list[tuple[float, float]]) -> list[object]:
    """Feed (probability, milliseconds) runs; returns every decision."""
    decisions: list[object] = []
    for p, ms in pattern:
        decisions += detector.feed([p] * round(ms / WINDOW))
    return decisions


def test_speech_start_includes_prefix_padding_and_end_includes_the_silence() -> None:
    detector = TurnDetector(ServerVad(prefix_padding_ms=300, silence_duration_ms=500), WINDOW)
    decisions = run(detector, [(0.0, 1024), (0.9, 960), (0.0, 1024)])
    # Speech detected in the window starting at 1024 ms; silence counted from 1984 ms.
    assert decisions == [SpeechStarted(1024 - 300), SpeechStopped(1984 + 512)]


def test_prefix_padding_never_reaches_before_the_previous_turn() -> None:
    detector = TurnDetector(ServerVad(prefix_padding_ms=300, silence_duration_ms=200), WINDOW)
    first = run(detector, [(0.9, 320), (0.0, 224)])
    assert first == [SpeechStarted(0), SpeechStopped(544)]
    second = run(detector, [(0.9, 320), (0.0, 224)])
    assert second[0] == SpeechStarted(544)  # not 544 - 300


def test_short_dips_below_threshold_do_not_end_the_turn() -> None:
    detector = TurnDetector(ServerVad(silence_duration_ms=500), WINDOW)
    decisions = run(detector, [(0.9, 320), (0.0, 448), (0.9, 320), (0.0, 512)])
    assert [type(d) for d in decisions] == [SpeechStarted, SpeechStopped]


def test_probability_just_under_threshold_keeps_speech_going() -> None:
    detector = TurnDetector(ServerVad(threshold=0.5, silence_duration_ms=200), WINDOW)
    # 0.4 is under the threshold but within the hysteresis: still speech.
    decisions = run(detector, [(0.9, 96), (0.4, 1000), (0.1, 224)])
    assert [type(d) for d in decisions] == [SpeechStarted, SpeechStopped]
    assert decisions[1] == SpeechStopped(round(96 + 992 + 224))


def test_below_threshold_never_starts_a_turn() -> None:
    detector = TurnDetector(ServerVad(threshold=0.8), WINDOW)
    assert run(detector, [(0.7, 5000)]) == []


def test_idle_timeout_fires_after_the_configured_silence_and_waits_for_responses() -> None:
    detector = TurnDetector(ServerVad(idle_timeout_ms=6000), WINDOW)
    assert run(detector, [(0.0, 5984)]) == []
    assert detector.feed([0.0]) == [IdleTimeout(0, 6016)]
    detector.pause_idle()  # the response the timeout triggered
    assert run(detector, [(0.0, 10000)]) == []
    detector.resume_idle()
    decisions = run(detector, [(0.0, 6016)])
    assert decisions == [IdleTimeout(16000, 22016)]  # 10000 ms is 312 windows: 9984 ms


def test_no_idle_timeout_unless_configured() -> None:
    assert run(TurnDetector(ServerVad(), WINDOW), [(0.0, 40000)]) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i would like to order a pizza", 0.9),
        ("i would like to order a pizza and", 0.05),
        ("so um", 0.05),
        ("What time does?", 0.05),  # Whisper's pause-time guess, punctuated: an auxiliary
        ("The meeting has been.", 0.05),
        ("hello", 0.6),
        ("", 0.5),
    ],
)
def test_completeness(text: str, expected: float) -> None:
    assert completeness(text) == expected


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_semantic_wait_is_short_when_complete_and_capped_when_not(eagerness: str) -> None:
    quick, longest = EAGERNESS_WAIT_MS[eagerness]
    complete = semantic_wait_ms(eagerness, "book a table for two people")
    trailing = semantic_wait_ms(eagerness, "book a table for two people and")
    assert quick <= complete < quick + 0.02 * longest
    assert complete < trailing <= longest
    assert semantic_wait_ms("low", "and") <= 8000
    assert semantic_wait_ms("high", "and") <= 2000


def test_semantic_vad_ends_a_complete_sentence_sooner_than_a_trailing_one() -> None:
    def silence_needed(transcript: str) -> float:
        detector = TurnDetector(SemanticVad(type="semantic_vad", eagerness="medium"), WINDOW)
        run(detector, [(0.9, 640)])
        detector.transcript = transcript
        for n in range(1, 400):
            if detector.feed([0.0]):
                return n * WINDOW
        raise AssertionError("the turn never ended")

    complete = silence_needed("i would like to order a pizza")
    trailing = silence_needed("i would like to order a pizza and")
    assert complete <= 400
    assert 3000 <= trailing <= 4000 + WINDOW
