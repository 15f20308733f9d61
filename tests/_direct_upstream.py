"""A second voxgate process as the upstream Realtime service of the direct-mode tests: its
own API key, its own store, espeak for speech (quick to start, quick to answer)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _replica_procs import Replica

UPSTREAM_KEY = "sk-upstream-server-key-0123456789"


@dataclass(frozen=True)
class Upstream:
    port: int
    api_key: str

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


@contextlib.contextmanager
def upstream_voxgate(log_dir: Path) -> Iterator[Upstream]:
    env = {
        "VOXGATE_API_KEYS": UPSTREAM_KEY,
        "VOXGATE_DATA_DIR": str(log_dir / "data"),
        "VOXGATE_TTS": "espeak",
        "VOXGATE_LOG_LEVEL": "info",
    }
    replica = Replica("upstream", env, log_dir)
    try:
        replica.wait_ready()
        yield Upstream(replica.port, UPSTREAM_KEY)
    finally:
        replica.stop()
