"""Sharing the event loop fairly between sessions.

Input audio is heard (resampled, run through voice detection) on the session's main loop. A
single ``input_audio_buffer.append`` may carry up to 15 MiB (minutes of audio); heard in one
go it would hold the event loop — every session's — for seconds. `in_slices` regroups a
client event's outputs so that no group carries more than `SLICE_BYTES` of input audio; the
main loop yields to the event loop between groups. Order is kept: the session's own inbox is
not read until the whole event is applied, so nothing of this session runs in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from ..protocol.commands import InputAudio

T = TypeVar("T")  # a driver's outputs

# 250 ms of 24 kHz PCM16 (an even size, so no sample is split): a few ms of work per slice.
SLICE_BYTES = 12_000


def in_slices(outputs: Iterable[T]) -> Iterator[list[T | InputAudio]]:
    """``outputs`` in order, large input audio cut into slices of at most `SLICE_BYTES`."""
    group: list[T | InputAudio] = []
    for out in outputs:
        if not isinstance(out, InputAudio) or len(out.data) <= SLICE_BYTES:
            group.append(out)
            continue
        if group:
            yield group
            group = []
        data = out.data
        for start in range(0, len(data), SLICE_BYTES):
            yield [InputAudio(data[start : start + SLICE_BYTES], out.format)]
    if group:
        yield group
