"""SIP settings that cannot work are refused at start-up with a message saying what to fix,
and the outbound policy fields merge strictest-wins like the others."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from voxgate.control.policy import Policy
from voxgate.settings import Settings

TRUNK = {"name": "t", "allowed_sources": ["10.0.0.0/8"], "key": "sk-x"}


def settings(monkeypatch: pytest.MonkeyPatch, **sip: Any) -> Settings:
    monkeypatch.delenv("VOXGATE_SIP_LISTEN", raising=False)
    return Settings(sip={"listen": "127.0.0.1:5060", "trunks": [TRUNK], **sip})


@pytest.mark.parametrize(
    ("sip", "says"),
    [
        ({"routes": [{"number": "1", "webhook": "https://h/x"}]}, "webhook_secret"),
        ({"routes": [{"number": "1", "webhook": "ftp://h"}]}, "http(s) URL"),
        (
            {"routes": [{"number": "1", "session": {}, "webhook": "https://h"}]},
            "either session or webhook",
        ),
        ({"trunks": [{**TRUNK, "allowed_sources": ["10.0.0.300/8"]}]}, "10.0.0.300/8"),
        ({"trunks": [{**TRUNK, "username": "u"}]}, "both username and password"),
        ({"trunks": [{**TRUNK, "outbound_uri": "tel:+1555"}]}, "must start with sip:"),
        ({"trunks": [{**TRUNK, "key": "${VOXGATE_TEST_UNSET_KEY}"}]}, "VOXGATE_TEST_UNSET_KEY"),
        ({"rtp_ports": "40000"}, "LOW-HIGH"),
        ({"listen": "5060"}, "host:port"),
    ],
)
def test_unworkable_sip_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, sip: dict[str, Any], says: str
) -> None:
    monkeypatch.delenv("VOXGATE_TEST_UNSET_KEY", raising=False)
    with pytest.raises(ValidationError) as refused:
        settings(monkeypatch, **sip)
    assert says in str(refused.value)


def test_env_keys_and_the_listen_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONE_KEY", "sk-from-env")
    monkeypatch.setenv("VOXGATE_SIP_LISTEN", "0.0.0.0:5070")
    s = Settings(sip={"trunks": [{**TRUNK, "key": "${PHONE_KEY}"}], "rtp_ports": "40000-40099"})
    assert s.sip.listen == "0.0.0.0:5070"
    assert s.sip.trunks[0].key == "sk-from-env"
    assert s.sip.port_range == (40000, 40099)
    monkeypatch.delenv("VOXGATE_SIP_LISTEN")
    assert Settings().sip.listen is None  # off by default


def test_outbound_prefixes_narrow_each_other() -> None:
    server = Policy(allowed_outbound_prefixes=["+1"], outbound_calls_per_minute=10)
    key = Policy(allowed_outbound_prefixes=["+1555", "+44"], outbound_calls_per_minute=3)
    merged = Policy.strictest(server, key)
    assert merged.allowed_outbound_prefixes == ["+1555"]
    assert merged.outbound_calls_per_minute == 3
    assert Policy.strictest(Policy(), key).allowed_outbound_prefixes == ["+1555", "+44"]
    assert Policy.strictest(Policy(), Policy()).allowed_outbound_prefixes is None
    assert (
        Policy.strictest(Policy(allowed_outbound_prefixes=[]), key).allowed_outbound_prefixes == []
    )
