"""How the OpenAI voice names sound on espeak-ng, and how ``speed`` becomes a speaking rate.

espeak-ng has no neural voices, so each OpenAI name gets its own combination of accent, voice
variant (the ``+f1`` … ``+m7`` formant sets shipped in espeak-ng-data/voices/!v), base pitch,
pitch range and rate: different enough that two agents in one call are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# espeak-ng's own defaults and limits for espeakRATE (words per minute).
DEFAULT_RATE = 175
MIN_RATE = 80
MIN_SPEED = 0.25
MAX_SPEED = 1.5


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """One espeak-ng voice setting.

    ``name`` is what ``espeak_SetVoiceByName`` takes (language, optionally ``+variant``);
    ``pitch`` and ``range`` are espeak's 0–100 parameters (50 is the voice's own);
    ``rate`` is words per minute at speed 1.0.
    """

    name: str
    pitch: int = 50
    range: int = 50
    rate: int = DEFAULT_RATE


OPENAI_VOICES: dict[str, EspeakVoice] = {
    "alloy": EspeakVoice("en-us+f3", pitch=45, range=50, rate=175),
    "ash": EspeakVoice("en-us+m3", pitch=42, range=45, rate=170),
    "ballad": EspeakVoice("en-gb-x-rp+m2", pitch=50, range=75, rate=160),
    "coral": EspeakVoice("en-us+f2", pitch=62, range=60, rate=180),
    "echo": EspeakVoice("en-us+m1", pitch=30, range=40, rate=175),
    "sage": EspeakVoice("en+f4", pitch=40, range=45, rate=165),
    "shimmer": EspeakVoice("en-us+f1", pitch=78, range=65, rate=185),
    "verse": EspeakVoice("en+m4", pitch=58, range=80, rate=170),
    "marin": EspeakVoice("en-us+f5", pitch=52, range=55, rate=160),
    "cedar": EspeakVoice("en-us+m7", pitch=25, range=50, rate=165),
}
DEFAULT_VOICE = OPENAI_VOICES["alloy"]


def resolve_voice(voice: str) -> EspeakVoice:
    """The setting for an OpenAI voice name (any case); any other string is taken as an
    espeak-ng voice name ("en", "fr+m2", …) with default pitch and rate. Whether espeak
    knows it is only found out when speaking; unknown names then fall back to
    ``DEFAULT_VOICE``."""
    known = OPENAI_VOICES.get(voice.strip().lower())
    if known is not None:
        return known
    return EspeakVoice(voice.strip()) if voice.strip() else DEFAULT_VOICE


def speaking_rate(voice: EspeakVoice, speed: float) -> int:
    """espeak's words per minute for ``speed`` (OpenAI's 0.25–1.5, 1.0 normal).

    espeak cannot go below 80 wpm, so very slow speeds (under ~0.45) all sound the same.
    """
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return max(MIN_RATE, round(voice.rate * speed))
