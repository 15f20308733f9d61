"""Turn detection: from speech probabilities to "the user started / stopped speaking".

Sans-IO and clock-free: the detector is fed one VAD probability per window of audio and
counts time in audio milliseconds since the session's first appended sample, which is the
time base of ``audio_start_ms`` / ``audio_end_ms`` on the wire. So the same audio always gives
the same turns, whatever the machine's load.

``server_vad`` ends a turn after ``silence_duration_ms`` below the threshold.
``semantic_vad`` ends it after a wait that depends on how finished the words heard so far
sound (`completeness`): a complete sentence ends quickly, a trailing "and", "so" or "um"
waits up to the eagerness maximum (8 / 4 / 2 s for low / medium / high).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol.session import SemanticVad, ServerVad

# Speech continues while the probability stays above threshold minus this margin, so a
# probability hovering around the threshold does not chop one utterance into many.
HYSTERESIS = 0.15

# semantic_vad: (wait after a complete-sounding utterance, maximum wait), in ms.
EAGERNESS_WAIT_MS = {
    "low": (800, 8000),
    "medium": (300, 4000),
    "high": (200, 2000),
    "auto": (300, 4000),
}

# Words after which a sentence is not over: conjunctions, fillers, articles, prepositions,
# auxiliaries.
# fmt: off
_TRAILING = frozenset({
    "and", "or", "but", "so", "because", "um", "uh", "er", "erm", "hmm", "like", "then", "if",
    "when", "while", "the", "a", "an", "to", "of", "for", "with", "in", "on", "at", "my",
    "your", "our", "their", "his", "her", "its", "is", "are", "was", "i", "you", "we", "they",
    "that", "which", "who", "about", "from", "into", "than", "as", "also", "plus", "just",
    "really", "very",
    # Auxiliaries: "what time does …", "the meeting has been …".
    "does", "do", "did", "can", "could", "would", "will", "should", "has", "have", "had",
    "been", "be", "were", "am",
})
# fmt: on
_WORD = re.compile(r"[a-z']+")


def completeness(transcript: str) -> float:
    """How finished an utterance sounds, 0 (surely more to come) to 1 (a complete thought).
    A cheap lexical rule, not a model: good enough to wait for the obvious continuations."""
    words = _WORD.findall(transcript.lower())
    if not words:
        return 0.5  # nothing recognised yet: no evidence either way
    if words[-1] in _TRAILING:
        return 0.05
    return 0.9 if len(words) >= 2 else 0.6


def semantic_wait_ms(eagerness: str, transcript: str) -> float:
    quick, longest = EAGERNESS_WAIT_MS[eagerness]
    unfinished = 1.0 - completeness(transcript)
    return quick + (longest - quick) * unfinished**2


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    # Start of the audio that belongs to the turn: detection minus prefix padding.
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    # End of the turn's audio, including the silence that ended it.
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class IdleTimeout:
    audio_start_ms: int
    audio_end_ms: int


Decision = SpeechStarted | SpeechStopped | IdleTimeout


class TurnDetector:
    def __init__(self, config: ServerVad | SemanticVad, window_ms: float) -> None:
        self.config = config
        self.window_ms = window_ms
        self.position_ms = 0.0  # audio time at the end of the last window fed
        self.in_speech = False
        self.transcript = ""  # the partial transcript of the current turn (semantic_vad)
        self._silence_ms = 0.0
        self._floor_ms = 0.0  # a turn never reaches back before the previous one ended
        self._idle_since_ms: float | None = 0.0

    @property
    def silence_ms(self) -> float:
        """Silence so far inside the current turn (0 while speaking or between turns)."""
        return self._silence_ms if self.in_speech else 0.0

    def reconfigure(self, config: ServerVad | SemanticVad) -> None:
        self.config = config

    def feed(self, probabilities: list[float]) -> list[Decision]:
        decisions: list[Decision] = []
        for p in probabilities:
            self.position_ms += self.window_ms
            decision = self._window(p)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def pause_idle(self) -> None:
        """A response is running: the idle timeout does not count."""
        self._idle_since_ms = None

    def resume_idle(self) -> None:
        """The response ended (or was cancelled): idle time counts from now."""
        if self._idle_since_ms is None and not self.in_speech:
            self._idle_since_ms = self.position_ms

    def _window(self, p: float) -> Decision | None:
        threshold = self.config.threshold if isinstance(self.config, ServerVad) else 0.5
        if not self.in_speech:
            if p >= threshold:
                self.in_speech = True
                self._silence_ms = 0.0
                self._idle_since_ms = None
                self.transcript = ""
                detected = self.position_ms - self.window_ms
                start = max(self._floor_ms, detected - self._prefix_ms())
                return SpeechStarted(round(start))
            return self._idle_check()
        if p >= threshold - HYSTERESIS:
            self._silence_ms = 0.0
            return None
        self._silence_ms += self.window_ms
        if self._silence_ms >= self._wait_ms():
            self.in_speech = False
            self._floor_ms = self.position_ms
            self._idle_since_ms = self.position_ms
            return SpeechStopped(round(self.position_ms))
        return None

    def _prefix_ms(self) -> float:
        if isinstance(self.config, ServerVad):
            return float(self.config.prefix_padding_ms)
        return 300.0

    def _wait_ms(self) -> float:
        if isinstance(self.config, ServerVad):
            return float(self.config.silence_duration_ms)
        return semantic_wait_ms(self.config.eagerness, self.transcript)

    def _idle_check(self) -> Decision | None:
        timeout = self.config.idle_timeout_ms if isinstance(self.config, ServerVad) else None
        if timeout is None or self._idle_since_ms is None:
            return None
        if self.position_ms - self._idle_since_ms < timeout:
            return None
        start, end = self._idle_since_ms, self.position_ms
        self._idle_since_ms = None  # counts again once the response it triggers has ended
        self._floor_ms = end
        return IdleTimeout(round(start), round(end))
