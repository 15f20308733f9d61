"""The engines one session runs on."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..engines.base import LLMEngine, STTEngine, TTSEngine, VADEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineSet:
    llm: LLMEngine
    tts: TTSEngine
    stt: STTEngine | None = None
    vad: VADEngine | None = None

    async def aclose(self) -> None:
        """Close every engine that has something to close (VAD engines hold nothing), the
        speech-to-text workers first since they are processes. One engine failing to close
        is logged and does not keep the others open."""
        engines: list[STTEngine | TTSEngine | LLMEngine] = [
            e for e in (self.stt, self.tts, self.llm) if e is not None
        ]
        for engine in engines:
            try:
                await engine.aclose()
            except Exception:
                log.exception("closing the %s engine failed", engine.name)
