"""Engine errors: where they came from and whether trying again can help."""

from __future__ import annotations


class EngineError(Exception):
    """A failure inside an engine (STT, TTS, LLM, VAD, upstream).

    ``origin`` names the engine ("llm", "tts", …); ``retryable`` says whether the same request
    may succeed if tried again (timeouts, 5xx, connection resets) or not (bad config, 4xx).
    """

    def __init__(self, message: str, *, origin: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"EngineError({self.message!r}, origin={self.origin!r}, retryable={self.retryable})"


class EngineUnavailable(EngineError):
    """The engine cannot start: a missing model file, library or setting. Not retryable."""

    def __init__(self, message: str, *, origin: str) -> None:
        super().__init__(message, origin=origin, retryable=False)
