"""Voice activity detection with Silero VAD on onnxruntime (CPU, offline).

The model file is not downloaded: it ships inside the ``faster-whisper`` wheel
(``faster_whisper/assets/silero_vad_v6.onnx``). That export takes a batch of windows as a
time sequence: ``input`` [windows, 64 + 512] (each 512-sample window with the last 64 samples
of the window before it prepended), LSTM state ``h`` and ``c`` [1, 1, 128], and returns one
probability per window plus the new state. It is 16 kHz only.

One InferenceSession serves the whole process (onnxruntime sessions are safe to run from
several threads); each stream keeps its own LSTM state, context and leftover samples.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt

# onnxruntime ships no type information.
import onnxruntime  # type: ignore[import-untyped]

from voxgate.engines.errors import EngineUnavailable
from voxgate.engines.local.onnx import cpu_session

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # 32 ms at 16 kHz: the window size the model was trained on
_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (1, 1, 128)
_EXPECTED_INPUTS = ("input", "h", "c")
_MODEL_PACKAGE = "faster_whisper"
_MODEL_GLOB = "silero_vad*.onnx"


def find_model() -> Path:
    """Path of the Silero VAD model inside the installed ``faster-whisper`` package."""
    # find_spec on a top-level name locates the package without importing it; importing
    # faster_whisper would pull in ctranslate2 and PyAV for nothing.
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            models = sorted((Path(root) / "assets").glob(_MODEL_GLOB))
            if models:
                return models[-1]  # newest version when several ship
    raise EngineUnavailable(
        "Silero VAD model not found: install the 'faster-whisper' package, whose wheel "
        "ships assets/silero_vad_v6.onnx",
        origin="vad",
    )


@functools.cache
def _session(path: Path) -> onnxruntime.InferenceSession:
    try:
        # One window costs ~0.1 ms; extra threads only add wake-up latency and steal the
        # cores that the event loop and the STT workers need.
        session = cpu_session(path, threads=1)
    except Exception as exc:  # onnxruntime raises its own untyped exception classes
        raise EngineUnavailable(
            f"cannot load Silero VAD model {path}: {exc}", origin="vad"
        ) from exc
    names = tuple(i.name for i in session.get_inputs())
    if names != _EXPECTED_INPUTS:
        raise EngineUnavailable(
            f"unsupported Silero VAD model {path}: inputs {names}, expected {_EXPECTED_INPUTS} "
            "(the faster-whisper export)",
            origin="vad",
        )
    return session


class SileroVAD:
    """The Silero VAD engine (``VADEngine``). Loads the shared model on construction."""

    name = "silero"
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: Path | None = None) -> None:
        self._session = _session(model_path or find_model())

    def open_stream(self) -> SileroVADStream:
        return SileroVADStream(self._session)


class SileroVADStream:
    """Per-session VAD state (``VADStream``). Not safe to share between threads."""

    window_samples = WINDOW_SAMPLES

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._pending = bytearray()
        self.reset()

    def reset(self) -> None:
        """Forget the audio heard so far, as if the stream were new."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending.clear()

    def process(self, pcm: bytes) -> list[float]:
        """Speech probability for each complete 512-sample window; the rest waits."""
        self._pending += pcm
        window_bytes = 2 * WINDOW_SAMPLES
        count = len(self._pending) // window_bytes
        if count == 0:
            return []
        raw = np.frombuffer(self._pending, dtype="<i2", count=count * WINDOW_SAMPLES)
        windows = (raw.astype(np.float32) / 32768.0).reshape(count, WINDOW_SAMPLES)
        del raw  # release the view before resizing the buffer it points into
        del self._pending[: count * window_bytes]
        return self._run(windows)

    def _run(self, windows: npt.NDArray[np.float32]) -> list[float]:
        # Window i is preceded by the tail of window i-1; the first by the previous call's.
        contexts = np.vstack([self._context[None, :], windows[:-1, -_CONTEXT_SAMPLES:]])
        batch = np.hstack([contexts, windows])
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -_CONTEXT_SAMPLES:].copy()
        return [float(p) for p in np.asarray(probs).reshape(-1)]
