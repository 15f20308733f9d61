"""Engines wrapped to feed ``/metrics``: language-model time to first token, text-to-speech
time to first audio, and the real-time factors of text to speech and speech to text (compute
seconds over audio seconds, two counters each, so that any window's ratio can be taken). The
wrappers change nothing else: events and audio pass through as they come, and closing a
wrapper's stream closes the engine's."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from prometheus_client import Counter, Histogram

from ..engines.base import (
    ChatRequest,
    LLMDone,
    LLMEngine,
    LLMEvent,
    SpeculativeSTTStream,
    STTEngine,
    STTStream,
    Transcript,
    TTSEngine,
)


class MeteredLLM:
    def __init__(
        self, inner: LLMEngine, first_token: Histogram, clock: Callable[[], float]
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._first_token = first_token
        self._clock = clock

    async def stream(self, request: ChatRequest) -> AsyncGenerator[LLMEvent, None]:
        started, first = self._clock(), True
        async with aclosing(self.inner.stream(request)) as events:
            async for event in events:
                if first and not isinstance(event, LLMDone):
                    self._first_token.observe(self._clock() - started)
                    first = False
                yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeteredTTS:
    def __init__(
        self,
        inner: TTSEngine,
        first_audio: Histogram,
        compute: Counter,
        audio: Counter,
        clock: Callable[[], float],
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self._first_audio, self._compute, self._audio = first_audio, compute, audio
        self._clock = clock

    async def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0
    ) -> AsyncGenerator[bytes, None]:
        first = True
        async with aclosing(self.inner.synthesize(text, voice=voice, speed=speed)) as chunks:
            while True:
                # Only the time spent waiting for the engine counts, not the reader's.
                asked = self._clock()
                try:
                    pcm = await anext(chunks)
                except StopAsyncIteration:
                    self._compute.inc(self._clock() - asked)
                    return
                made = self._clock()
                self._compute.inc(made - asked)
                if first:
                    self._first_audio.observe(made - asked)
                    first = False
                self._audio.inc(len(pcm) / 2 / self.sample_rate)
                yield pcm

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeteredSTT:
    """Speech to text with its decoding time counted (``peek`` and ``finish``) against the
    audio it decoded: its real-time factor. Streams that can peek still can."""

    def __init__(
        self, inner: STTEngine, compute: Counter, audio: Counter, clock: Callable[[], float]
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.logprobs = inner.logprobs
        self._compute, self._audio, self._clock = compute, audio, clock

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> STTStream:
        stream = await self.inner.open_stream(language=language, prompt=prompt, logprobs=logprobs)
        kind = _MeteredSpeculative if isinstance(stream, SpeculativeSTTStream) else _Metered
        return kind(stream, self)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def timed(self, decoding: Awaitable[Transcript]) -> Transcript:
        started = self._clock()
        transcript = await decoding
        self._compute.inc(self._clock() - started)
        self._audio.inc(transcript.audio_seconds)
        return transcript


class _Metered:
    def __init__(self, inner: STTStream, engine: MeteredSTT) -> None:
        self.inner = inner
        self.engine = engine

    async def push(self, pcm: bytes) -> str | None:
        return await self.inner.push(pcm)

    async def finish(self) -> Transcript:
        return await self.engine.timed(self.inner.finish())

    async def aclose(self) -> None:
        await self.inner.aclose()


class _MeteredSpeculative(_Metered):
    inner: SpeculativeSTTStream

    async def peek(self) -> Transcript:
        return await self.engine.timed(self.inner.peek())
