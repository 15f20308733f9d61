"""The pure parts of server tools: declarations, who may use a tool, argument validation,
the confirmation rules, the spoken-yes classifier and the signature scheme."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from pydantic import ValidationError

from voxgate.control.identity import Principal
from voxgate.control.policy import Policy
from voxgate.control.tools import (
    Confirmations,
    Refusal,
    ToolSpec,
    idempotency_key,
    is_clear_yes,
    may_use,
    parse_arguments,
    redacted,
    signature,
    verify,
)
from voxgate.settings import Settings

SCHEMA = {
    "type": "object",
    "properties": {"account_id": {"type": "string"}, "pin": {"type": "string"}},
    "required": ["account_id"],
    "additionalProperties": False,
}


def spec(**fields: Any) -> ToolSpec:
    base: dict[str, Any] = {
        "name": "delete_account",
        "kind": "http",
        "url": "https://tools.example/delete",
        "parameters": SCHEMA,
        "effect": "destructive",
        "sensitive_args": ["pin"],
    }
    return ToolSpec.model_validate({**base, **fields})


def principal(**fields: Any) -> Principal:
    base: dict[str, Any] = {
        "key_id": "key_1",
        "key_prefix": "sk-1",
        "tenant": "acme",
        "scopes": frozenset({"realtime"}),
        "user_hash": None,
        "client_secret_id": None,
        "policy": Policy(),
    }
    return Principal(**{**base, **fields})


# -- declarations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": None}, "needs a url"),
        ({"kind": "python", "target": "no colon"}, "module:function"),
        ({"parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}, "JSON Schema"),
        ({"parameters": {"type": "string"}}, "describe an object"),
        ({"name": "has space"}, "name"),
        ({"color": "red"}, "color"),
    ],
)
def test_bad_declarations_are_refused_with_the_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


def test_duplicate_names_are_refused_in_settings() -> None:
    one = spec().model_dump()
    with pytest.raises(ValidationError, match="two tools are named 'delete_account'"):
        Settings(tools=[one, one])


def test_confirmation_defaults_follow_the_effect() -> None:
    assert spec().needs_confirmation
    assert spec(effect="write").needs_confirmation
    assert not spec(effect="read").needs_confirmation
    assert not spec(effect="write", confirm=False).needs_confirmation
    assert spec(effect="read", confirm=True).needs_confirmation


def test_header_variables_come_from_the_environment() -> None:
    s = spec(headers={"Authorization": "Bearer ${CRM_TOKEN}", "X-Plain": "1"})
    assert s.resolved_headers({"CRM_TOKEN": "t0k"}) == {
        "Authorization": "Bearer t0k",
        "X-Plain": "1",
    }
    with pytest.raises(KeyError, match="CRM_TOKEN is not set"):
        s.resolved_headers({})


# -- who may use a tool ----------------------------------------------------------------------


def test_policy_allowlist_and_audience() -> None:
    assert may_use(spec(), principal())
    assert not may_use(spec(), principal(policy=Policy(allowed_tools=["get_*"])))
    assert may_use(spec(), principal(policy=Policy(allowed_tools=["delete_*"])))
    acme_only = spec(audience={"tenants": ["acme"]})
    assert may_use(acme_only, principal())
    assert not may_use(acme_only, principal(tenant="other"))
    assert not may_use(acme_only, None)  # development mode is nobody's tenant
    both = spec(audience={"tenants": ["acme"], "scopes": ["admin"]})
    assert not may_use(both, principal())  # every list given must match
    assert may_use(both, principal(scopes=frozenset({"realtime", "admin"})))
    assert not may_use(spec(audience={"key_ids": ["key_2"]}), principal())


# -- arguments -------------------------------------------------------------------------------


def test_arguments_are_checked_against_the_schema() -> None:
    assert parse_arguments(spec(), '{"account_id": "42"}') == {"account_id": "42"}
    for raw, words in [
        ('{"account": "42"}', "account_id"),
        ('{"account_id": 42}', "not of type 'string'"),
        ("[1]", "must be a JSON object"),
        ("{nope", "not valid JSON"),
    ]:
        refused = parse_arguments(spec(), raw)
        assert isinstance(refused, Refusal) and refused.guardrail == "invalid_arguments"
        assert words in refused.message
        assert json.loads(refused.output())["error"]["code"] == "invalid_arguments"


def test_sensitive_arguments_are_redacted() -> None:
    assert redacted(spec(), {"account_id": "42", "pin": "9876"}) == {
        "account_id": "42",
        "pin": "[redacted]",
    }


# -- confirmation ----------------------------------------------------------------------------


def test_an_action_is_settled_once_and_expires() -> None:
    book = Confirmations()
    args = {"account_id": "42", "pin": "9876"}
    action = book.open(spec(), args, action_id="mcpr_1", call_id="call_1", now=100.0)
    assert action.summary == "delete account: account id 42, pin [redacted]"
    args["account_id"] = "43"  # the caller's dict changing afterwards changes nothing
    assert action.arguments == {"account_id": "42", "pin": "9876"}
    assert book.settle("mcpr_1", 110.0, approve=True)[1] == "approved"
    with pytest.raises(KeyError):  # one approval runs it once
        book.settle("mcpr_1", 111.0, approve=True)
    book.open(spec(), {"account_id": "7"}, action_id="mcpr_2", call_id="call_2", now=100.0)
    assert book.settle("mcpr_2", 160.0, approve=True)[1] == "expired"
    book.open(spec(), {"account_id": "8"}, action_id="mcpr_3", call_id="call_3", now=100.0)
    assert [a.id for a in book.expired(200.0)] == ["mcpr_3"] and book.all() == []


def test_spoken_confirmation_can_be_switched_off() -> None:
    book = Confirmations()
    book.open(
        spec(spoken_confirmation=False), {"account_id": "1"}, action_id="a", call_id="c", now=0.0
    )
    assert book.spoken() == [] and len(book.all()) == 1


@pytest.mark.parametrize(
    "words",
    [
        "yes",
        "Yes.",
        "yes please",
        "Yes, please.",
        "go ahead",
        "Confirm.",
        "yeah do it",
        "Yes, go ahead.",
        "yep",
        "Okay, yes.",
    ],
)
def test_clear_yes(words: str) -> None:
    assert is_clear_yes(words)


@pytest.mark.parametrize(
    "words",
    [
        "no",
        "No.",
        "not yet",
        "yes but wait",
        "maybe",
        "what?",
        "",
        "okay",
        "sure",
        "yes delete the other account",
        "I don't think so",
        "yes no",
        "cancel",
        "yes if you must",
        "hmm",
    ],
)
def test_anything_else_is_not_a_yes(words: str) -> None:
    assert not is_clear_yes(words)


# -- signature -------------------------------------------------------------------------------


def test_signature_scheme_as_documented() -> None:
    body = b'{"tool":"x","arguments":{}}'
    header = signature("secret", 1_700_000_000, body)
    mac = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"
    assert verify("secret", header, body, now=1_700_000_100)
    assert not verify("secret", header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify("secret", header, body, now=1_700_001_000)  # too old: a replay
    assert not verify("secret", "garbage", body, now=1_700_000_000)


def test_idempotency_key_is_one_per_action() -> None:
    assert idempotency_key("sess_1", "mcpr_1") == idempotency_key("sess_1", "mcpr_1")
    assert idempotency_key("sess_1", "mcpr_1") != idempotency_key("sess_1", "mcpr_2")
    assert idempotency_key("sess_1", "mcpr_1") != idempotency_key("sess_2", "mcpr_1")


# -- the worked example of docs/tools.md, as a config file -----------------------------------


def test_the_documented_example_loads(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    from pathlib import Path

    from voxgate.server.tools import server_tools
    from voxgate.settings import load_settings

    doc = (Path(__file__).parent.parent / "docs" / "tools.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert toml is not None
    config = tmp_path / "voxgate.toml"
    config.write_text(toml.group(1))
    settings = load_settings(config)
    names = [t.name for t in settings.tools]
    assert names == ["get_weather", "delete_account"]
    assert settings.tools[1].needs_confirmation and settings.tools[1].sensitive_args == ["pin"]
    monkeypatch.delenv("WEATHER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="WEATHER_TOKEN is not set"):
        server_tools(settings)
    monkeypatch.setenv("WEATHER_TOKEN", "w")
    registry = server_tools(settings)
    assert registry is not None and set(registry.specs) == set(names)
