"""The [twilio] settings: environment references, the environment override, bad values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from voxgate.settings import Settings


def test_the_key_and_token_may_name_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHONE_KEY", "sk-phone")
    monkeypatch.setenv("PHONE_TOKEN", "tok")
    settings = Settings(twilio={"auth_token": "${PHONE_TOKEN}", "key": "${PHONE_KEY}"})
    assert (settings.twilio.auth_token, settings.twilio.key) == ("tok", "sk-phone")
    with pytest.raises(ValidationError, match="NOT_SET_ANYWHERE"):
        Settings(twilio={"key": "${NOT_SET_ANYWHERE}"})


def test_the_auth_token_comes_from_the_environment_over_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOXGATE_TWILIO_AUTH_TOKEN", "from-env")
    assert Settings(twilio={"auth_token": "from-file"}).twilio.auth_token == "from-env"
    monkeypatch.delenv("VOXGATE_TWILIO_AUTH_TOKEN")
    assert Settings().twilio.auth_token is None


def test_bad_twilio_settings_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="public_url"):
        Settings(twilio={"public_url": "voice.example.com"})
    with pytest.raises(ValidationError, match="media_token_ttl_s"):
        Settings(twilio={"media_token_ttl_s": 0})
    with pytest.raises(ValidationError, match="keys"):
        Settings(twilio={"keys": "typo"})
    assert Settings(twilio={"public_url": "https://v.example.com/"}).twilio.public_url == (
        "https://v.example.com"
    )
