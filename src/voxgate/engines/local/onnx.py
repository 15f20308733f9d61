"""onnxruntime sessions for the embedded engines (Silero VAD, piper voices)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime  # type: ignore[import-untyped]


def cpu_session(path: Path, *, threads: int) -> onnxruntime.InferenceSession:
    """A CPU inference session for the model at ``path`` using at most ``threads`` threads
    for one run, quiet below errors. onnxruntime's own exceptions propagate: callers turn
    them into ``EngineUnavailable`` messages that name their engine."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
