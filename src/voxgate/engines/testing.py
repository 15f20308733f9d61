"""Scripted engines for tests: deterministic, instant unless asked otherwise, and recording
what they were asked, so tests can assert on both sides of the engine boundary.

- ``ScriptedLLM`` plays back scripted answers (and errors) and records the requests.
- ``ScriptedTTS`` "speaks" a tone 60 ms per character, in 20 ms chunks.
- ``ScriptedSTT`` hears a transcript given up front, revealing it word by word.
- ``ScriptedVAD`` calls a window speech when its loudness passes a threshold, so ``tone_pcm``
  is speech and ``silence_pcm`` is silence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from voxgate.engines.base import (
    ChatRequest,
    LLMDone,
    LLMEvent,
    TextDelta,
    ToolCallDelta,
    Transcript,
)
from voxgate.engines.errors import EngineError

# ---------------------------------------------------------------------------------------------
# Audio helpers
# ---------------------------------------------------------------------------------------------


def tone_pcm(
    duration_ms: float,
    *,
    sample_rate: int,
    frequency: float = 440.0,
    amplitude: float = 0.3,
    start_sample: int = 0,
) -> bytes:
    """A sine tone as PCM16; ``start_sample`` continues the phase of an earlier piece."""
    count = round(sample_rate * duration_ms / 1000)
    return _sine(start_sample, count, sample_rate, frequency, amplitude)


def silence_pcm(duration_ms: float, *, sample_rate: int) -> bytes:
    """Digital silence as PCM16."""
    return bytes(2 * round(sample_rate * duration_ms / 1000))


def _sine(start: int, count: int, sample_rate: int, frequency: float, amplitude: float) -> bytes:
    t = np.arange(start, start + count) / sample_rate
    wave = amplitude * 32767 * np.sin(2 * np.pi * frequency * t)
    return wave.astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------

ScriptItem = LLMEvent | EngineError
# A script is the events of one answer, or a function of the request that returns them.
# An EngineError in a script is raised at that point of the stream.
Script = Sequence[ScriptItem] | Callable[[ChatRequest], Sequence[ScriptItem]]


def text_script(text: str, *, finish_reason: Literal["stop", "length"] = "stop") -> list[LLMEvent]:
    """An answer that streams ``text`` word by word and ends with ``LLMDone``."""
    words = text.split(" ")
    deltas: list[LLMEvent] = [TextDelta(w if i == 0 else f" {w}") for i, w in enumerate(words)]
    return [*deltas, LLMDone(finish_reason=finish_reason)]


def tool_call_script(
    name: str, arguments: dict[str, Any] | str, *, call_id: str = "call_1"
) -> list[LLMEvent]:
    """An answer that calls one tool, with the arguments split over two deltas."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    half = len(text) // 2
    return [
        ToolCallDelta(index=0, call_id=call_id, name=name, arguments=text[:half]),
        ToolCallDelta(index=0, arguments=text[half:]),
        LLMDone(finish_reason="tool_calls"),
    ]


class ScriptedLLM:
    """``LLMEngine`` that answers the n-th request with the n-th script.

    Records every request in ``requests``; counts streams the consumer closed before their
    script ended in ``aborted``. ``delay`` (seconds) is waited before each event.
    """

    name = "scripted-llm"

    def __init__(self, scripts: Iterable[Script], *, delay: float = 0.0) -> None:
        self._scripts = list(scripts)
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self.aborted = 0
        self.closed = False

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        """Play the next script; raise the ``EngineError`` items where they stand."""
        self.requests.append(request)
        try:
            for item in self._next_script(request):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if isinstance(item, EngineError):
                    raise item
                yield item
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted += 1
            raise

    def _next_script(self, request: ChatRequest) -> Sequence[ScriptItem]:
        number = len(self.requests)
        if number > len(self._scripts):
            raise RuntimeError(
                f"ScriptedLLM got request #{number} but has only {len(self._scripts)} scripts"
            )
        script = self._scripts[number - 1]
        return script(request) if callable(script) else script

    async def aclose(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------------------
# Text to speech
# ---------------------------------------------------------------------------------------------


class ScriptedTTS:
    """``TTSEngine`` that renders text as a 440 Hz tone, ``ms_per_char`` per character.

    Audio comes in ``chunk_ms`` chunks, instantly, or paced at real time (by the loop's clock)
    when ``realtime`` is set. Records ``texts`` and ``voices`` asked for, counts syntheses
    closed early in ``aborted``; ``aclose`` stops every synthesis in progress.
    """

    name = "scripted-tts"

    def __init__(
        self,
        *,
        sample_rate: int = 24000,
        ms_per_char: float = 60.0,
        chunk_ms: float = 20.0,
        realtime: bool = False,
    ) -> None:
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.chunk_samples = round(sample_rate * chunk_ms / 1000)
        self.realtime = realtime
        self.texts: list[str] = []
        self.voices: list[str] = []
        self.aborted = 0
        self.closed = False

    def duration_ms(self, text: str, speed: float = 1.0) -> float:
        """How long ``text`` sounds when spoken at ``speed``."""
        return len(text) * self.ms_per_char / speed

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        """Yield the tone for ``text`` chunk by chunk; stop at once when closed."""
        self.texts.append(text)
        self.voices.append(voice)
        total = round(self.sample_rate * self.duration_ms(text, speed) / 1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        try:
            while sent < total and not self.closed:
                count = min(self.chunk_samples, total - sent)
                yield _sine(sent, count, self.sample_rate, 440.0, 0.3)
                sent += count
                if self.realtime:
                    # Pace against the start time, not chunk by chunk, so delays do not add up.
                    await asyncio.sleep(max(0.0, started + sent / self.sample_rate - loop.time()))
                else:
                    await asyncio.sleep(
                        0
                    )  # a turn for the loop, so a close can land between chunks
        except (GeneratorExit, asyncio.CancelledError):
            self.aborted += 1
            raise

    async def aclose(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------------------
# Speech to text
# ---------------------------------------------------------------------------------------------


class ScriptedSTTStream:
    """One utterance: reveals one more word of the transcript per ``ms_per_word`` of audio."""

    def __init__(self, transcript: str | EngineError, sample_rate: int, ms_per_word: float):
        self._transcript = transcript
        self._words = [] if isinstance(transcript, EngineError) else transcript.split()
        self._bytes_per_word = max(2, round(sample_rate * ms_per_word / 1000) * 2)
        self._sample_rate = sample_rate
        self._revealed = 0
        self.audio_bytes = 0
        self.closed = False
        self.finished = False
        self.peeks: list[str] = []
        self.peek_is_final = True

    async def push(self, pcm: bytes) -> str | None:
        """Take audio; return the longer partial when another word is due."""
        if self.closed:
            raise RuntimeError("push() on a closed ScriptedSTTStream")
        self.audio_bytes += len(pcm)
        due = min(len(self._words), self.audio_bytes // self._bytes_per_word)
        if due <= self._revealed:
            return None
        self._revealed = due
        return " ".join(self._words[:due])

    async def peek(self) -> Transcript:
        """The words revealed by the audio so far (``SpeculativeSTTStream``); recorded in
        ``peeks``."""
        if isinstance(self._transcript, EngineError):
            raise self._transcript
        text = " ".join(self._words[: self._revealed])
        self.peeks.append(text)
        if self.peek_is_final and self._revealed == len(self._words):
            text = str(self._transcript)
        return Transcript(text=text, audio_seconds=self.audio_bytes / 2 / self._sample_rate)

    async def finish(self) -> Transcript:
        """The whole scripted transcript, however much audio came; or the scripted error."""
        self.finished = True
        self.closed = True
        if isinstance(self._transcript, EngineError):
            raise self._transcript
        seconds = self.audio_bytes / 2 / self._sample_rate
        return Transcript(text=self._transcript, audio_seconds=seconds)

    async def aclose(self) -> None:
        self.closed = True


class ScriptedSTT:
    """``STTEngine`` whose n-th stream hears the n-th transcript (or raises it at ``finish``)."""

    name = "scripted-stt"
    logprobs = False

    def __init__(
        self,
        transcripts: Iterable[str | EngineError],
        *,
        sample_rate: int = 16000,
        ms_per_word: float = 200.0,
    ) -> None:
        self._transcripts = list(transcripts)
        self.sample_rate = sample_rate
        self.ms_per_word = ms_per_word
        self.streams: list[ScriptedSTTStream] = []
        self.languages: list[str | None] = []
        self.prompts: list[str | None] = []
        self.closed = False

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> ScriptedSTTStream:
        """Start the next utterance; more utterances than transcripts is a test bug."""
        if len(self.streams) >= len(self._transcripts):
            raise RuntimeError(
                f"ScriptedSTT opened stream #{len(self.streams) + 1} "
                f"but has only {len(self._transcripts)} transcripts"
            )
        stream = ScriptedSTTStream(
            self._transcripts[len(self.streams)], self.sample_rate, self.ms_per_word
        )
        self.streams.append(stream)
        self.languages.append(language)
        self.prompts.append(prompt)
        return stream

    async def aclose(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------------------
# Voice activity detection
# ---------------------------------------------------------------------------------------------


class ScriptedVADStream:
    """Speech probability 1.0 for a window whose RMS (0–1 of full scale) reaches the
    threshold, else 0.0."""

    def __init__(self, window_samples: int, threshold: float) -> None:
        self.window_samples = window_samples
        self._threshold = threshold
        self._pending = b""

    def process(self, pcm: bytes) -> list[float]:
        """One probability per complete window; leftover bytes wait for the next call."""
        data = self._pending + pcm
        window_bytes = 2 * self.window_samples
        whole = len(data) - len(data) % window_bytes
        self._pending = data[whole:]
        return [
            self._probability(data[i : i + window_bytes]) for i in range(0, whole, window_bytes)
        ]

    def _probability(self, window: bytes) -> float:
        samples = np.frombuffer(window, dtype="<i2").astype(np.float64) / 32768
        rms = float(np.sqrt(np.mean(samples**2)))
        return 1.0 if rms >= self._threshold else 0.0

    def reset(self) -> None:
        self._pending = b""


class ScriptedVAD:
    """``VADEngine`` that decides by loudness: deterministic speech from ``tone_pcm``."""

    name = "scripted-vad"

    def __init__(
        self, *, sample_rate: int = 16000, window_samples: int = 512, threshold: float = 0.01
    ) -> None:
        self.sample_rate = sample_rate
        self.window_samples = window_samples
        self.threshold = threshold

    def open_stream(self) -> ScriptedVADStream:
        return ScriptedVADStream(self.window_samples, self.threshold)
