"""What ``audio.input.noise_reduction`` (WebRTC's noise suppressor) changes, with and without it.

- CPU per stream: suppressor CPU seconds per second of 16 kHz audio, near and far field.
- Noise left: how much quieter steady white noise is after suppression (dB).
- False turn starts: Silero VAD with the default ``server_vad`` settings over noise alone
  (white noise, and babble: several voices talking at once, quietly), per minute of noise;
  each would be a barge-in if a reply were playing.
- Word error rate of pocketsphinx on the embedded voice's sentences with white noise at
  10 dB and 5 dB SNR.

Prints one JSON object with the numbers, targets and whether each was met. Usage:
``python bench/noise.py [--sentences 10] [--noise-seconds 60]``. Targets: the suppressor costs
under 2 % of a core per stream, and it never makes false turn starts or word error worse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import numpy as np

from _speech import SENTENCES, add_noise, log, silence, synthesize
from voxgate.audio.denoise import NoiseKind, NoiseSuppressor
from voxgate.engines.local.espeak import EspeakTTS
from voxgate.engines.local.silero import SileroVAD
from voxgate.engines.local.sphinx import PocketsphinxEngine
from voxgate.engines.wer import word_error_rate
from voxgate.protocol.session import ServerVad
from voxgate.session.turns import SpeechStarted, TurnDetector

RATE = 16000
CPU_TARGET = 0.02  # suppressor CPU seconds per audio second
SNRS = (10.0, 5.0)
BABBLE_VOICES = ("alloy", "echo", "coral", "sage")


def suppressed(pcm: bytes, kind: NoiseKind | None) -> bytes:
    if kind is None:
        return pcm
    suppressor = NoiseSuppressor(kind)
    return suppressor.process(pcm) + suppressor.flush()


def cpu_per_second(pcm: bytes, kind: NoiseKind) -> float:
    started = time.process_time()
    suppressed(pcm, kind)
    return (time.process_time() - started) / (len(pcm) / 2 / RATE)


def white(seconds: float, dbfs: float, seed: int) -> bytes:
    level = 32767 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(seed).normal(0.0, level, int(seconds * RATE))
    return np.clip(noise, -32768, 32767).astype("<i2").tobytes()


async def babble(seconds: float, tts: EspeakTTS) -> bytes:
    """Several voices reading different sentences at once, looped, at about -35 dBFS."""
    total = np.zeros(int(seconds * RATE))
    for i, voice in enumerate(BABBLE_VOICES):
        text = ". ".join(SENTENCES[i :: len(BABBLE_VOICES)])
        speech = np.frombuffer(await synthesize(tts, text, voice, RATE), dtype="<i2")
        total += np.resize(speech.astype(np.float64), total.size)
    total *= 32767 * 10 ** (-35 / 20) / max(1.0, float(np.sqrt(np.mean(total**2))))
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


def turn_starts(pcm: bytes, vad: SileroVAD) -> int:
    stream = vad.open_stream()
    detector = TurnDetector(ServerVad(), 1000 * stream.window_samples / RATE)
    decisions = detector.feed(stream.process(pcm))
    return sum(isinstance(d, SpeechStarted) for d in decisions)


def rms_db(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(20 * np.log10(np.sqrt(np.mean(samples**2)) + 1e-12))


async def transcribe(engine: PocketsphinxEngine, pcm: bytes) -> str:
    stream = await engine.open_stream()
    try:
        for start in range(0, len(pcm), 3200):
            await stream.push(pcm[start : start + 3200])
        return (await stream.finish()).text
    finally:
        await stream.aclose()


async def wer_by_condition(sentences: list[str], speech: list[bytes]) -> dict[str, float]:
    engine = await PocketsphinxEngine.start(workers=1, acquire_timeout=120)
    results: dict[str, float] = {}
    try:
        await transcribe(engine, speech[0])  # the decoder's first utterance is unscored
        for snr in SNRS:
            noisy = [add_noise(pcm, snr, RATE, seed=i) for i, pcm in enumerate(speech)]
            for kind in (None, "near_field"):
                pairs = [
                    (text, await transcribe(engine, suppressed(pcm, kind)))
                    for text, pcm in zip(sentences, noisy, strict=True)
                ]
                results[f"snr{snr:g}db_{kind or 'off'}"] = round(word_error_rate(pairs), 3)
                log(
                    f"  WER at {snr:g} dB, suppressor {kind or 'off'}: {results[list(results)[-1]]}"
                )
    finally:
        await engine.aclose()
    return results


async def run(args: argparse.Namespace) -> dict[str, object]:
    tts = EspeakTTS()
    try:
        sentences = list(SENTENCES[: args.sentences])
        pad = silence(0.3, RATE)
        speech = [pad + await synthesize(tts, s, "alloy", RATE) + pad for s in sentences]
        noises = {
            "white": white(args.noise_seconds, -30, seed=1),
            "babble": await babble(args.noise_seconds, tts),
        }
    finally:
        await tts.aclose()
    cpu = {k: round(cpu_per_second(noises["white"], k), 4) for k in ("near_field", "far_field")}
    left = rms_db(suppressed(noises["white"], "near_field")[RATE * 2 :])
    vad = SileroVAD()
    per_minute = 60 / args.noise_seconds
    false_starts = {
        f"{name}_{kind or 'off'}": round(turn_starts(suppressed(pcm, kind), vad) * per_minute, 1)
        for name, pcm in noises.items()
        for kind in (None, "near_field")
    }
    log("decoding noisy speech")
    wer = await wer_by_condition(sentences, speech)
    met = {
        "cpu": max(cpu.values()) <= CPU_TARGET,
        **{
            f"false_starts_{n}": false_starts[f"{n}_near_field"] <= false_starts[f"{n}_off"]
            for n in noises
        },
        **{
            f"wer_snr{s:g}db": wer[f"snr{s:g}db_near_field"] <= wer[f"snr{s:g}db_off"] for s in SNRS
        },
    }
    return {
        "benchmark": "noise_suppression",
        "suppressor": "webrtc-noise-gain (WebRTC audio processing module)",
        "cpu_seconds_per_audio_second": cpu,
        "white_noise_dbfs": {"before": round(rms_db(noises["white"]), 1), "after": round(left, 1)},
        "false_turn_starts_per_minute": false_starts,
        "wer": wer,
        "sentences": len(sentences),
        "targets": {"cpu": CPU_TARGET, "false_starts": "not above without", "wer": "not above"},
        "met": met,
        "all_met": all(met.values()),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=10, help="how many sentences (10)")
    parser.add_argument("--noise-seconds", type=float, default=60.0, help="noise per kind (60)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
