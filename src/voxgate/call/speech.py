"""The user's audio: a WAV file, or text spoken by the embedded espeak-ng."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from ..audio import resample
from ..engines.errors import EngineError
from ..engines.local.espeak import EspeakTTS
from .options import WIRE_RATE, CallError, CallOptions
from .wav import read_wav


async def load_speech(options: CallOptions) -> bytes:
    """The audio to send, as 24 kHz mono PCM16."""
    if options.wav is not None:
        return await asyncio.to_thread(read_wav, options.wav)
    assert options.text is not None
    lead_in = bytes(2 * int(options.lead_in_s * WIRE_RATE))
    return lead_in + await speak_text(options.text, options.voice)


async def speak_text(text: str, voice: str) -> bytes:
    """``text`` spoken by the embedded espeak-ng, as 24 kHz PCM16."""
    tts = EspeakTTS()
    try:
        async with aclosing(tts.synthesize(text, voice=voice)) as stream:
            pcm = b"".join([chunk async for chunk in stream])
    except (EngineError, ValueError) as exc:
        raise CallError(f"cannot speak the text: {exc}") from None
    finally:
        await tts.aclose()
    if not pcm:
        raise CallError("the text produced no speech")
    return resample(pcm, tts.sample_rate, WIRE_RATE)
