"""Settings of the controls: the store's URL, the server policy from the config file or the
environment, and loading settings without touching the process environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from voxgate.settings import Settings, load_settings


def test_the_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'voxgate.db'}"
    url = "postgresql+asyncpg://postgres@127.0.0.1/voxgate"
    assert Settings(database_url=url).database_url == url


def test_policy_from_a_toml_table_and_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOXGATE_CONFIG", raising=False)
    monkeypatch.delenv("VOXGATE_POLICY", raising=False)
    config = tmp_path / "voxgate.toml"
    config.write_text('[policy]\nmax_session_seconds = 900\nallowed_voices = ["marin"]\n')
    before = dict(os.environ)
    settings = load_settings(config)
    assert settings.policy.max_session_seconds == 900
    assert settings.policy.allowed_voices == ["marin"]
    assert dict(os.environ) == before  # nothing written to the environment
    assert load_settings().policy.max_session_seconds is None
    monkeypatch.setenv("VOXGATE_POLICY", '{"idle_timeout_seconds": 30}')
    assert load_settings().policy.idle_timeout_seconds == 30


def test_an_unknown_policy_field_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXGATE_POLICY", '{"max_sesion_seconds": 30}')
    with pytest.raises(ValidationError, match="max_sesion_seconds"):
        load_settings()
