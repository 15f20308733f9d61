"""A second voxgate *process* as the upstream Realtime service of the server under test: it
speaks the whole protocol (WebSocket sessions, client secrets, `/v1/realtime/calls`,
sideband), with its own static API key and the fastest engines that still answer with
audio (espeak-ng and the built-in responder).

    with upstream_voxgate(tmp_path) as up:
        relay = start_server(upstreams=[up.setting(models=["gpt-realtime*"])], ...)

The relaying server is started in the test process with `start_server` (conftest.py);
`up.log_text()` is the upstream's log, for checks and failure messages.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _replica_procs import Replica


@dataclass
class UpstreamVoxgate:
    replica: Replica
    api_key: str

    @property
    def port(self) -> int:
        return self.replica.port

    @property
    def http_url(self) -> str:
        """The REST base (``…/v1``)."""
        return self.replica.base_url

    @property
    def ws_url(self) -> str:
        """The Realtime WebSocket endpoint (``ws://…/v1/realtime``)."""
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def setting(self, name: str = "default", **fields: Any) -> dict[str, Any]:
        """An ``[[upstreams]]`` entry pointing at this process (``fields`` override)."""
        return {"name": name, "url": self.ws_url, "api_key": self.api_key, **fields}

    def log_text(self) -> str:
        return self.replica.log_path.read_text(errors="replace")


@contextlib.contextmanager
def upstream_voxgate(
    tmp_path: Path, *, name: str = "upstream", env: dict[str, str] | None = None
) -> Iterator[UpstreamVoxgate]:
    """Start the upstream process (ready when this yields) and stop it afterwards.
    ``env`` adds or overrides ``VOXGATE_*`` settings of the upstream."""
    log_dir = tmp_path / name
    log_dir.mkdir(parents=True, exist_ok=True)
    api_key = f"sk-upstream-{secrets.token_hex(16)}"
    settings = {
        "VOXGATE_API_KEYS": api_key,
        "VOXGATE_TTS": "espeak",
        # One pocketsphinx worker starts faster than Whisper and is enough for a test's turns.
        "VOXGATE_STT": "pocketsphinx",
        "VOXGATE_STT_WORKERS": "1",
        "VOXGATE_DATA_DIR": str(log_dir / "data"),
        "VOXGATE_LOG_LEVEL": "info",
        **(env or {}),
    }
    replica = Replica(name, settings, log_dir)
    try:
        replica.wait_ready()
        yield UpstreamVoxgate(replica, api_key)
    finally:
        replica.stop()
