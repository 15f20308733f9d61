"""Session recordings on disk: ``<dir>/<session_id>.wav`` (two channels, PCM16) with a
``<session_id>.json`` beside it saying whose it is, when it expires and whether it is complete.

Files are local to the replica that served the session. Expired recordings are deleted
whenever one is looked up, and all of them at most once an hour when a recording starts (the
sweep reads every sidecar); a recording still being made is not served.
"""

from __future__ import annotations

import contextlib
import json
import re
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SAFE_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
SWEEP_INTERVAL_S = 3600.0


@dataclass
class RecordingInfo:
    session_id: str
    rate: int
    started_at: float
    expires_at: float | None
    key_id: str | None = None
    user_hash: str | None = None
    complete: bool = False
    seconds: float = 0.0


class WavSink:
    """A `RecordingSink` writing a two-channel WAV file as the call goes. Nothing is on disk
    until the first audio (a session that never ran leaves no file)."""

    def __init__(self, store: RecordingStore, info: RecordingInfo) -> None:
        self._store, self.info = store, info
        self._wav: wave.Wave_write | None = None
        self._frames = 0

    def write(self, frames: bytes) -> None:
        if self._wav is None:
            self._wav = self._store.open_wav(self.info)
        self._wav.writeframesraw(frames)
        self._frames += len(frames) // 4

    def close(self) -> None:
        if self._wav is None:
            return
        self._wav.close()  # writes the final sizes into the header
        self.info.complete = True
        self.info.seconds = self._frames / self.info.rate
        self._store.save_info(self.info)


class RecordingStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._swept_at: float | None = None

    def wav_path(self, session_id: str) -> Path:
        return self.directory / f"{_checked(session_id)}.wav"

    def _info_path(self, session_id: str) -> Path:
        return self.directory / f"{_checked(session_id)}.json"

    def start(self, info: RecordingInfo) -> WavSink:
        """A sink for a session's recording (files appear with its first audio)."""
        _checked(info.session_id)
        return WavSink(self, info)

    def open_wav(self, info: RecordingInfo) -> wave.Wave_write:
        """Create a recording's files (expired recordings are swept first)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._swept_at is None or info.started_at - self._swept_at >= SWEEP_INTERVAL_S:
            self._swept_at = info.started_at
            self.expire(info.started_at)
        self.save_info(info)
        wav = wave.open(str(self.wav_path(info.session_id)), "wb")  # noqa: SIM115
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(info.rate)
        return wav

    def save_info(self, info: RecordingInfo) -> None:
        path = self._info_path(info.session_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info)))
        tmp.replace(path)

    def info(self, session_id: str) -> RecordingInfo | None:
        try:
            raw: dict[str, Any] = json.loads(self._info_path(session_id).read_text())
        except (OSError, ValueError):
            return None
        return RecordingInfo(**raw)

    def find(self, session_id: str, now: float) -> RecordingInfo | None:
        """The recording of a session, None if there is none or it expired (then deleted)."""
        if not _SAFE_ID.fullmatch(session_id):
            return None
        info = self.info(session_id)
        if info is not None and info.expires_at is not None and info.expires_at <= now:
            self.delete(session_id)
            return None
        return info

    def delete(self, session_id: str) -> bool:
        if not _SAFE_ID.fullmatch(session_id):
            return False
        found = False
        for path in (self.wav_path(session_id), self._info_path(session_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                found = True
        return found

    def delete_user(self, user_hash: str) -> int:
        """Delete every recording of one end user; how many."""
        gone = 0
        for info in self._all():
            if info.user_hash == user_hash and self.delete(info.session_id):
                gone += 1
        return gone

    def expire(self, now: float) -> int:
        gone = 0
        for info in self._all():
            if info.expires_at is not None and info.expires_at <= now:
                gone += self.delete(info.session_id)
        return gone

    def _all(self) -> list[RecordingInfo]:
        if not self.directory.is_dir():
            return []
        found = (self.info(p.stem) for p in self.directory.glob("*.json"))
        return [info for info in found if info is not None]


def _checked(session_id: str) -> str:
    if not _SAFE_ID.fullmatch(session_id):
        raise ValueError(f"not a session id: {session_id!r}")
    return session_id
