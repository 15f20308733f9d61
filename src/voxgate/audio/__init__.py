"""Pure audio DSP: the Realtime audio formats, G.711 µ-law/A-law, resampling, conversion.

Nothing here imports the rest of voxgate or touches asyncio; everything is plain functions
and small stateful stream objects over ``bytes`` of 16-bit little-endian mono PCM.
"""

from .convert import (
    FormatConverter,
    InputConverter,
    OutputConverter,
    decode_to_pcm16,
    encode_from_pcm16,
)
from .formats import PCM16, PCMA, PCMU, AudioFormat, FormatType
from .g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from .resample import Resampler, resample

__all__ = [
    "PCM16",
    "PCMA",
    "PCMU",
    "AudioFormat",
    "FormatConverter",
    "FormatType",
    "InputConverter",
    "OutputConverter",
    "Resampler",
    "alaw_to_pcm16",
    "decode_to_pcm16",
    "encode_from_pcm16",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "resample",
    "ulaw_to_pcm16",
]
