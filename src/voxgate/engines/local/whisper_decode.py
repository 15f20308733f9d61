"""One Whisper decoding of one utterance, with the encoder window trimmed to the utterance.

Whisper was trained on 30 s windows and faster-whisper always encodes one, whatever the
utterance's length: for a 2 s utterance most of the ~700 ms (tiny.en, one core) goes to
encoding 28 s of padding. CTranslate2's encoder accepts shorter feature windows, and its cost
falls with the window (measured on one core: 3000 frames 683 ms, 1500 160 ms, 500 32 ms).
Trimming too far breaks the decoder, though: with no padding at all after the speech it
loops, repeating the last words. Padding the window to 8 s kept clean-speech word error rates
near the full window's (11 % against 14 % on espeak speech) at ~120 ms per utterance; on
noisy speech (20 dB SNR) 10 s did clearly better than 8 s (16 % against 29 % on one 20
utterance sample) for ~50 ms more, so:

- the window is the utterance plus ``_TAIL_S`` of silence, at least ``_MIN_WINDOW_S`` and at
  most Whisper's 30 s;
- the number of tokens generated is bounded by the audio's duration (``_TOKENS_PER_S``, far
  above any speaking rate), so a loop that starts anyway ends early;
- a greedy transcript whose text compresses too well (a loop) is decoded again with beam
  search, the fallback Whisper itself uses.

Utterances longer than one window go through faster-whisper's own sliding-window path.
Everything here blocks (CTranslate2 releases the GIL while it runs): call it in a thread.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxgate.engines.base import TokenLogprob

SAMPLE_RATE = 16000
_FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
_HOP = SAMPLE_RATE // _FRAMES_PER_S
_MAX_FRAMES = 3000  # Whisper's 30 s window
_MIN_WINDOW_S = 10.0
_TAIL_S = 2.0
_TOKENS_PER_S = 8  # fast speech is ~4 words (~5 tokens) a second
_MIN_TOKENS = 12
# Whisper's own thresholds: a transcript compressing better than this is a loop; speech this
# unlikely with a no-speech token this likely is silence or noise.
_COMPRESSION_LIMIT = 2.4
_NO_SPEECH = 0.6
_SILENCE_RMS = 1e-3  # -60 dBFS: nothing a microphone would call speech
_LOGPROB_FLOOR = -1.0
# The longest prompt (previous text) kept: Whisper's decoder context is 448 tokens, half of it
# for the prompt.
_MAX_PROMPT_TOKENS = 223


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tokens: int = 0  # tokens generated


def window_frames(n_samples: int) -> int:
    """Encoder frames for an utterance of ``n_samples``: the utterance plus padding."""
    seconds = n_samples / SAMPLE_RATE
    frames = math.ceil(max(seconds + _TAIL_S, _MIN_WINDOW_S) * _FRAMES_PER_S)
    frames += frames % 2  # the encoder's convolution halves the frame count
    return min(frames, _MAX_FRAMES)


def max_new_tokens(n_samples: int) -> int:
    return _MIN_TOKENS + math.ceil(_TOKENS_PER_S * n_samples / SAMPLE_RATE)


def fits_one_window(n_samples: int) -> bool:
    return n_samples / SAMPLE_RATE + 0.5 <= _MAX_FRAMES / _FRAMES_PER_S


def decode(
    model: Any,
    audio: np.ndarray,
    *,
    language: str | None = None,
    prompt: str | None = None,
    logprobs: bool = False,
    beam_size: int = 5,
) -> Decoded:
    """Transcribe ``audio`` (float32 mono at 16 kHz) with a faster-whisper ``WhisperModel``.

    ``language`` is an ISO 639-1 code (None: detect, on multilingual models); ``prompt`` is
    text Whisper reads as what came before (names, spellings); ``logprobs`` asks for each
    token's log probability (decoding greedily then); ``beam_size`` 1 is greedy decoding
    (about half the decoder's time, a few more errors)."""
    if audio.size == 0 or float(np.sqrt(np.mean(np.square(audio)))) < _SILENCE_RMS:
        return Decoded(text="")  # Whisper "hears" words in silence ("you", "Thank you.")
    if not fits_one_window(len(audio)):
        return _decode_long(model, audio, language, prompt, beam_size)
    encoded = model.encode(_features(model, audio))
    tokenizer = _tokenizer(model, language, encoded)
    context = _prompt(model, tokenizer, prompt)
    limit = min(len(context) + max_new_tokens(len(audio)), model.max_length)
    if logprobs:
        beam_size = 1  # CTranslate2 returns each step's vocabulary logits for greedy search only
    result = _generate(model, encoded, context, limit, beam=beam_size, logits=logprobs)
    text = tokenizer.decode(result.sequences_ids[0]).strip()
    if _compression(text) > _COMPRESSION_LIMIT and beam_size < 5:
        # Beam search has no per-step logits: a looping greedy answer loses its logprobs.
        result = _generate(model, encoded, context, limit, beam=5, logits=False)
        text = tokenizer.decode(result.sequences_ids[0]).strip()
        logprobs = False
    tokens = result.sequences_ids[0]
    avg = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -math.inf
    if result.no_speech_prob > _NO_SPEECH and avg < _LOGPROB_FLOOR:
        return Decoded(text="")
    scores = _token_logprobs(tokenizer, tokens, result.logits[0]) if logprobs else []
    return Decoded(text=text, logprobs=scores, tokens=len(tokens))


def _features(model: Any, audio: np.ndarray) -> np.ndarray:
    """The log-mel features of ``audio`` in a window of ``window_frames``. The padding is
    digital silence added to the audio before the features are computed, as Whisper was
    trained: padding the features with zeros instead (faster-whisper's way) reads as a loud
    flat sound after the speech, and with noisy speech it doubled the word error rate and
    brought back repetition loops."""
    frames = window_frames(len(audio))
    padded = np.zeros(frames * _HOP, dtype=np.float32)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    features = model.feature_extractor(padded, padding=0)[:, :frames]
    if features.shape[-1] < frames:  # the STFT's last partial frame
        features = np.pad(features, ((0, 0), (0, frames - features.shape[-1])), mode="edge")
    return np.ascontiguousarray(features, dtype=np.float32)


def _tokenizer(model: Any, language: str | None, encoded: Any) -> Any:
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]

    multilingual = bool(model.model.is_multilingual)
    if multilingual and language is None:
        detected = model.model.detect_language(encoded)[0]
        language = detected[0][0][2:-2]  # "<|en|>" → "en"
    return Tokenizer(
        model.hf_tokenizer,
        multilingual,
        task="transcribe",
        language=language if multilingual else "en",
    )


def _prompt(model: Any, tokenizer: Any, prompt: str | None) -> list[int]:
    context: list[int] = []
    if prompt and prompt.strip():
        previous = tokenizer.encode(" " + prompt.strip())[-_MAX_PROMPT_TOKENS:]
        context = [tokenizer.sot_prev, *previous]
    return [*context, *tokenizer.sot_sequence, tokenizer.no_timestamps]


def _generate(
    model: Any, encoded: Any, prompt: list[int], limit: int, *, beam: int, logits: bool
) -> Any:
    return model.model.generate(
        encoded,
        [prompt],
        beam_size=beam,
        max_length=limit,
        return_scores=True,
        return_no_speech_prob=True,
        return_logits_vocab=logits,
        suppress_blank=True,
        suppress_tokens=[-1],
    )[0]


def _compression(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _token_logprobs(tokenizer: Any, tokens: list[int], logits: list[Any]) -> list[TokenLogprob]:
    """Each generated token's log probability, from the vocabulary logits of its step."""
    out: list[TokenLogprob] = []
    for token, step in zip(tokens, logits, strict=False):
        row = np.asarray(step, dtype=np.float32).reshape(-1)
        top = float(row.max())
        logsum = top + math.log(float(np.exp(row - top).sum()))
        piece = tokenizer.decode([token])
        out.append(TokenLogprob(piece, float(row[token]) - logsum, list(piece.encode())))
    return out


def _decode_long(
    model: Any, audio: np.ndarray, language: str | None, prompt: str | None, beam_size: int
) -> Decoded:
    segments, _info = model.transcribe(
        audio,
        language=language,
        initial_prompt=prompt or None,
        vad_filter=False,
        condition_on_previous_text=False,
        beam_size=beam_size,
    )
    # ``segments`` is lazy: the decoding happens while it is read.
    return Decoded(text=" ".join(s.text.strip() for s in segments).strip())
