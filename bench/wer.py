"""Word error rate of the embedded speech-to-text on espeak-ng speech.

Every sentence is spoken by each voice, then decoded clean, with white noise at 20 dB and
10 dB SNR (noise power relative to the active speech's power), and through the telephone path
(G.711 μ-law at 8 kHz and back). Words are compared lower-case, without punctuation, numbers
spelled out. Prints one JSON object: corpus WER per voice and condition, overall per
condition, real-time factor, targets and whether each was met. Usage:
``python bench/wer.py [--engine whisper|pocketsphinx] [--voices alloy,echo] [--sentences 15]
[--workers 2] [--beam-size 5]``.

Whisper (the default engine, the bundled tiny.en) decodes each utterance whole, in threads.
pocketsphinx carries its cepstral mean from one utterance to the next (see
``voxgate.engines.local.sphinx``), so each worker first hears one unscored utterance, as a
server's long-lived workers would have, and conditions are decoded one after the other rather
than mixed, as within one conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from _speech import SENTENCES, VOICES, add_noise, log, silence, synthesize
from voxgate.audio import pcm16_to_ulaw, resample, ulaw_to_pcm16
from voxgate.engines.base import STTEngine
from voxgate.engines.local.espeak import EspeakTTS
from voxgate.engines.local.sphinx import SAMPLE_RATE, PocketsphinxEngine
from voxgate.engines.local.voices import OPENAI_VOICES
from voxgate.engines.local.whisper import WhisperEngine
from voxgate.engines.wer import word_error_rate

# Condition → SNR of added white noise (None: none); "g711" is the telephone path.
CONDITIONS: dict[str, float | None] = {
    "clean": None,
    "snr20db": 20.0,
    "snr10db": 10.0,
    "g711": None,
}
# Corpus WER each condition should stay under, per engine. pocketsphinx's small en-us model
# on espeak's robotic voices is far from a neural recogniser: its targets bound regressions,
# not quality (and it does not hear telephone audio: no target there).
WER_TARGETS: dict[str, dict[str, float]] = {
    "whisper": {"clean": 0.12, "snr20db": 0.18, "snr10db": 0.25, "g711": 0.20},
    "pocketsphinx": {"clean": 0.35, "snr20db": 0.45, "snr10db": 0.75, "g711": 1.0},
}
# Decoder CPU time per second of audio: under 0.5 a worker keeps up with a live talker with
# twice the headroom it needs (bench/capacity.py measures many sessions at once).
RTF_TARGET = 0.5
CHUNK_SECONDS = 0.1  # pushes the size a live stream would send
PAD_SECONDS = 0.3  # silence around each utterance, as a microphone would capture
WARM_UP = "Good morning, this is a short test of the microphone."


@dataclass(frozen=True, slots=True)
class Utterance:
    voice: str
    condition: str
    reference: str
    pcm: bytes  # PCM16 mono at SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Decoded:
    utterance: Utterance
    hypothesis: str
    seconds: float  # from the first push to the final transcript


def children_cpu() -> float:
    """CPU seconds used by reaped child processes (the decoder workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--voices",
        default=",".join(VOICES[:4]),
        help=f"comma-separated OpenAI voice names, of: {', '.join(OPENAI_VOICES)}",
    )
    # 15 of the 18 by default: about two minutes on two idle cores.
    parser.add_argument(
        "--sentences", type=int, default=15, help=f"how many of the {len(SENTENCES)} (15)"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoder processes (one per CPU)"
    )
    parser.add_argument("--details", action="store_true", help="include every hypothesis")
    parser.add_argument("--engine", choices=["whisper", "pocketsphinx"], default="whisper")
    parser.add_argument("--beam-size", type=int, default=5, help="Whisper's beam size (5)")
    args = parser.parse_args()
    args.voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if not 1 <= args.sentences <= len(SENTENCES):
        parser.error(f"--sentences must be 1–{len(SENTENCES)}")
    # espeak would quietly speak an unknown name with its default voice.
    if unknown := [v for v in args.voices if v not in OPENAI_VOICES]:
        parser.error(f"unknown voices {unknown}")
    if not args.voices or args.workers < 1:
        parser.error("need at least one voice and one worker")
    return args


async def speak(texts: list[str], voices: list[str]) -> dict[tuple[str, int], bytes]:
    """Each text (by index) in each voice, with silence around it."""
    tts = EspeakTTS()
    pad = silence(PAD_SECONDS, SAMPLE_RATE)
    try:
        return {
            (voice, index): pad + await synthesize(tts, text, voice, SAMPLE_RATE) + pad
            for voice in voices
            for index, text in enumerate(texts)
        }
    finally:
        await tts.aclose()


async def make_corpus(voices: list[str], sentences: list[str]) -> list[Utterance]:
    """Every sentence in every voice and condition, ordered condition by condition and, within
    one, sentence by sentence across voices."""
    speech = await speak(sentences, voices)
    corpus = []
    for condition_index, (condition, snr) in enumerate(CONDITIONS.items()):
        for index, text in enumerate(sentences):
            for voice_index, voice in enumerate(voices):
                pcm = speech[voice, index]
                if snr is not None:
                    # A fixed seed per utterance: reruns hear the same noise.
                    seed = (condition_index * 1000 + index) * 100 + voice_index
                    pcm = add_noise(pcm, snr, SAMPLE_RATE, seed)
                if condition == "g711":
                    pcm = telephone(pcm)
                corpus.append(Utterance(voice, condition, text, pcm))
    return corpus


def telephone(pcm: bytes) -> bytes:
    """``pcm`` as it arrives over a G.711 μ-law call: 8 kHz, companded, and back to 16 kHz."""
    narrow = ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, SAMPLE_RATE, 8000)))
    return resample(narrow, 8000, SAMPLE_RATE)


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def push_all(push: Callable[[bytes], Awaitable[object]], pcm: bytes) -> None:
    chunk = 2 * round(CHUNK_SECONDS * SAMPLE_RATE)
    for start in range(0, len(pcm), chunk):
        await push(pcm[start : start + chunk])


async def warm_up(engine: STTEngine, workers: int, pcm: bytes) -> None:
    """One unscored utterance on every worker: streams are opened together, so each holds a
    different worker."""
    streams = [await engine.open_stream() for _ in range(workers)]
    for stream in streams:
        await push_all(stream.push, pcm)
    for stream in streams:
        await stream.finish()


async def decode(engine: STTEngine, utterance: Utterance) -> Decoded:
    stream = await engine.open_stream()
    started = time.perf_counter()
    try:
        await push_all(stream.push, utterance.pcm)
        transcript = await stream.finish()
    finally:
        await stream.aclose()
    return Decoded(utterance, transcript.text, time.perf_counter() - started)


async def decode_all(
    engine: STTEngine, corpus: list[Utterance], workers: int
) -> tuple[list[Decoded], float]:
    """Decode with ``workers`` utterances in flight; returns the results and the wall time."""
    slots = asyncio.Semaphore(workers)
    results: list[Decoded] = []
    started = time.perf_counter()
    for condition in CONDITIONS:
        block = [u for u in corpus if u.condition == condition]

        async def bounded(utterance: Utterance) -> Decoded:
            async with slots:
                return await decode(engine, utterance)

        results += await asyncio.gather(*(bounded(u) for u in block))
        log(f"  {condition}: {len(block)} utterances decoded")
    return results, time.perf_counter() - started


def corpus_wer(results: list[Decoded], condition: str, voice: str | None = None) -> float:
    pairs = [
        (r.utterance.reference, r.hypothesis)
        for r in results
        if r.utterance.condition == condition and voice in (None, r.utterance.voice)
    ]
    return round(word_error_rate(pairs), 3)


async def run(args: argparse.Namespace) -> dict[str, object]:
    sentences = list(SENTENCES[: args.sentences])
    log(f"synthesising {len(sentences)} sentences x {len(args.voices)} voices")
    corpus = await make_corpus(args.voices, sentences)
    warm_pcm = (await speak([WARM_UP], args.voices[:1]))[args.voices[0], 0]
    log(f"starting {args.workers} {args.engine} workers")
    results, wall, worker_cpu = await (
        decode_whisper(args, corpus, warm_pcm)
        if args.engine == "whisper"
        else decode_pocketsphinx(args, corpus, warm_pcm)
    )

    audio = sum(r.utterance.seconds for r in results)
    rtf_cpu = worker_cpu / (audio + args.workers * len(warm_pcm) / 2 / SAMPLE_RATE)
    rtf_stream = sum(r.seconds for r in results) / audio
    overall = {c: corpus_wer(results, c) for c in CONDITIONS}
    wer = {
        c: {"overall": overall[c], "by_voice": {v: corpus_wer(results, c, v) for v in args.voices}}
        for c in CONDITIONS
    }
    targets = WER_TARGETS[args.engine]
    met = {f"wer_{c}": overall[c] <= target for c, target in targets.items()}
    met["rtf_cpu"] = rtf_cpu <= RTF_TARGET
    report: dict[str, object] = {
        "benchmark": "wer",
        "engine": args.engine,
        "beam_size": args.beam_size if args.engine == "whisper" else None,
        "normalised": "lower case, no punctuation, numbers spelled out",
        "voices": args.voices,
        "sentences": len(sentences),
        "workers": args.workers,
        "conditions": CONDITIONS,
        "wer": wer,
        "audio_seconds": round(audio, 1),
        "decode_wall_seconds": round(wall, 1),
        # cpu: worker CPU seconds per second of audio (least disturbed by a busy machine).
        # per_stream: wall time from first push to transcript over audio time, per utterance.
        # aggregate: the whole decoding's wall time over audio time, all workers busy.
        "rtf": {
            "cpu": round(rtf_cpu, 3),
            "per_stream": round(rtf_stream, 3),
            "aggregate": round(wall / audio, 3),
        },
        "targets": {**{f"wer_{c}": t for c, t in targets.items()}, "rtf_cpu": RTF_TARGET},
        "met": met,
        "all_met": all(met.values()),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    if args.details:
        report["details"] = [
            {
                "voice": r.utterance.voice,
                "condition": r.utterance.condition,
                "reference": r.utterance.reference,
                "hypothesis": r.hypothesis,
            }
            for r in results
        ]
    return report


async def decode_pocketsphinx(
    args: argparse.Namespace, corpus: list[Utterance], warm_pcm: bytes
) -> tuple[list[Decoded], float, float]:
    cpu_before = children_cpu()
    engine = await PocketsphinxEngine.start(workers=args.workers, acquire_timeout=120)
    try:
        await warm_up(engine, args.workers, warm_pcm)
        log(f"decoding {len(corpus)} utterances")
        results, wall = await decode_all(engine, corpus, args.workers)
    finally:
        await engine.aclose()
    # Counted once the workers are reaped; decoder creation is taken out, the warm-up stays in.
    return results, wall, children_cpu() - cpu_before - sum(engine.startup_seconds)


async def decode_whisper(
    args: argparse.Namespace, corpus: list[Utterance], warm_pcm: bytes
) -> tuple[list[Decoded], float, float]:
    engine = await WhisperEngine.load(workers=args.workers, beam_size=args.beam_size)
    try:
        # Decoding runs in this process's threads: its CPU time, from after the load.
        cpu_before = process_cpu()
        await warm_up(engine, args.workers, warm_pcm)
        log(f"decoding {len(corpus)} utterances")
        results, wall = await decode_all(engine, corpus, args.workers)
        return results, wall, process_cpu() - cpu_before
    finally:
        await engine.aclose()


def main() -> None:
    args = parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
