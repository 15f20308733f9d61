"""How the ten OpenAI voice names sound on a single-speaker piper voice.

A single-speaker neural voice has one timbre. Each OpenAI name gets its own pitch (with the
formants, like a larger or smaller speaker), tempo and expressiveness, so that two agents in
one call are told apart:

- pitch: the voice is rendered ``pitch`` times slower (piper's ``length_scale``) and then
  resampled to ``1/pitch`` of its length, which raises every frequency by ``pitch`` and
  brings the duration back;
- tempo: on top of that, ``length_scale`` divided by ``tempo`` (and by the response's
  ``speed``);
- expressiveness: piper's ``noise_scale`` (variation in the voice) and ``noise_w`` (in
  phoneme lengths), as multiples of the voice's own.

A multi-speaker voice maps names to speakers instead (see ``PiperTTS``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PiperVariant:
    pitch: float = 1.0
    tempo: float = 1.0
    noise: float = 1.0
    noise_w: float = 1.0


OPENAI_VARIANTS: dict[str, PiperVariant] = {
    "alloy": PiperVariant(),  # the voice as recorded
    "ash": PiperVariant(pitch=0.92, tempo=1.02),
    "ballad": PiperVariant(pitch=0.96, tempo=0.9, noise=1.2, noise_w=1.2),
    "coral": PiperVariant(pitch=1.12, tempo=1.05),
    "echo": PiperVariant(pitch=0.85),
    "sage": PiperVariant(pitch=1.05, tempo=0.94, noise=0.8),
    "shimmer": PiperVariant(pitch=1.2, tempo=1.06, noise=1.1),
    "verse": PiperVariant(pitch=1.04, tempo=1.0, noise=1.3, noise_w=1.3),
    "marin": PiperVariant(pitch=1.08, tempo=0.96),
    "cedar": PiperVariant(pitch=0.8, tempo=0.95, noise=0.9),
}
DEFAULT_VARIANT = OPENAI_VARIANTS["alloy"]


def variant(voice: str) -> PiperVariant:
    """The variant for an OpenAI voice name (any case); other names speak as recorded."""
    return OPENAI_VARIANTS.get(voice.strip().lower(), DEFAULT_VARIANT)
