"""Speech for the benchmarks, made by the product's own TTS (espeak-ng), plus noise and stats.

espeak-ng carries a little state from one synthesis to the next, so the same sentence can come
out slightly different depending on what was spoken before; benchmarks tolerate that.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from voxgate.audio import resample
from voxgate.engines.local.espeak import EspeakTTS

# Everyday sentences, each a complete thought, 4–10 words: what people say to a voice agent.
SENTENCES: tuple[str, ...] = (
    "What time does the store open tomorrow",
    "Please call my mother when you get home",
    "I would like to order a large pizza",
    "Can you tell me the weather for today",
    "Turn off the lights in the kitchen",
    "How long does it take to drive to work",
    "I need to book a table for two people",
    "Remind me to buy milk and bread",
    "The meeting has been moved to next week",
    "Where is the nearest train station",
    "My flight leaves at seven in the morning",
    "Could you play some music for me",
    "I lost my keys somewhere in the house",
    "Send a message to the team about lunch",
    "What is the best way to learn a language",
    "We are going to the park this afternoon",
    "Please set an alarm for six thirty",
    "Thank you very much for your help",
)

VOICES: tuple[str, ...] = ("alloy", "ash", "coral", "echo", "marin", "sage")


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries nothing but the result."""
    print(message, file=sys.stderr, flush=True)


async def synthesize(tts: EspeakTTS, text: str, voice: str, rate: int) -> bytes:
    """PCM16 mono speech for ``text`` at ``rate`` Hz."""
    chunks = [chunk async for chunk in tts.synthesize(text, voice=voice)]
    return resample(b"".join(chunks), tts.sample_rate, rate)


def active_power(samples: np.ndarray, rate: int) -> float:
    """Mean power over the frames that carry speech (within 40 dB of the loudest 20 ms frame).

    Averaging over the whole clip would count espeak's pauses and leading/trailing silence,
    making the speech look quieter than it is and the noise at a given SNR too weak.
    """
    frame = rate // 50
    usable = len(samples) - len(samples) % frame
    if usable == 0:
        return float(np.mean(samples.astype(np.float64) ** 2)) if len(samples) else 0.0
    frames = samples[:usable].astype(np.float64).reshape(-1, frame)
    powers = np.mean(frames**2, axis=1)
    active = powers[powers >= powers.max() * 1e-4]
    return float(np.mean(active))


def add_noise(pcm: bytes, snr_db: float, rate: int, seed: int) -> bytes:
    """``pcm`` plus white Gaussian noise whose power is ``snr_db`` below the speech's."""
    samples = np.frombuffer(pcm, dtype="<i2")
    noise_power = active_power(samples, rate) / 10 ** (snr_db / 10)
    noise = np.random.default_rng(seed).normal(0.0, math.sqrt(noise_power), samples.size)
    mixed = samples.astype(np.float64) + noise
    return np.clip(np.round(mixed), -32768, 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * round(seconds * rate))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100, linear interpolation); None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
