"""``voxgate call``: speak into a Realtime server as a user would, and hear what comes back.

The user's audio (a WAV file, or text spoken by the embedded espeak-ng) is converted to the
wire format (PCM16, 24 kHz, mono) and sent as ``input_audio_buffer.append`` in small chunks,
each leaving when the clock reaches the end of the audio it carries, as from a live
microphone. With ``server_vad`` / ``semantic_vad`` the microphone goes on sending silence after
the speech, so that the server's turn detection hears the speech end, until the reply is done;
with turn detection off (``none``) the call commits the audio and asks for a response itself.

Server events are printed as they arrive; the reply's audio is saved as a WAV file. Whatever
goes wrong (unreachable server, unusable WAV, refused key, an ``error`` event, a server that
goes quiet) ends the call with a message that says what happened and what to try.

The parts: ``options`` (what to do, and the errors), ``result`` (how it went), ``wav`` and
``speech`` (the user's audio in, the reply's audio out), ``connection`` (opening the
WebSocket), ``microphone`` (real-time pacing), ``printer`` (what the user sees) and
``client`` (the call itself).
"""

from .client import run_call
from .connection import realtime_url
from .options import DEFAULT_URL, DEFAULT_VOICE, CallOptions, CallUsageError
from .result import CallResult
from .wav import read_wav

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_VOICE",
    "CallOptions",
    "CallResult",
    "CallUsageError",
    "read_wav",
    "realtime_url",
    "run_call",
]
