"""The controls' pure parts: what a client secret binds, what a policy allows, and who may
act on a call — without a server."""

from __future__ import annotations

import pytest

from voxgate.control.guard import PolicyGuard, bound_paths, first_allowed_voice
from voxgate.control.identity import SCOPES, Principal, hash_user
from voxgate.control.policy import Policy
from voxgate.protocol.connection import RealtimeConnection
from voxgate.protocol.errors import ProtocolError

BOUND = {
    "type": "realtime",
    "instructions": "Front desk.",
    "audio": {"output": {"voice": "marin"}, "input": {"turn_detection": None}},
}


def connection(policy: Policy, bound: dict[str, object] | None = None) -> RealtimeConnection:
    conn = RealtimeConnection(model="gpt-realtime")
    if bound:
        conn.configure(bound)
    conn.guard = PolicyGuard(policy, bound)
    return conn


def refused(conn: RealtimeConnection, patch: dict[str, object]) -> ProtocolError:
    before = conn.config
    with pytest.raises(ProtocolError) as caught:
        conn.configure({"type": "realtime", **patch})
    assert conn.config == before  # nothing changed
    return caught.value


def test_bound_paths_are_the_leaves_given_at_minting() -> None:
    assert bound_paths(BOUND) == [
        "type",
        "instructions",
        "audio.output.voice",
        "audio.input.turn_detection",
    ]


def test_a_bound_field_cannot_change_and_others_can() -> None:
    conn = connection(Policy(), BOUND)
    assert refused(conn, {"instructions": "x"}).param == "session.instructions"
    error = refused(conn, {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    assert (error.code, error.param) == (
        "bound_by_client_secret",
        "session.audio.input.turn_detection",
    )
    conn.configure({"type": "realtime", "instructions": "Front desk."})  # the same value: fine
    conn.configure({"type": "realtime", "max_output_tokens": 100})
    assert conn.config.max_output_tokens == 100


def test_allowed_lists_with_wildcards() -> None:
    conn = connection(Policy(allowed_models=["gpt-realtime*"], allowed_tools=["lookup_*"]))
    assert refused(conn, {"model": "other-model"}).code == "model_not_allowed"
    conn.configure({"type": "realtime", "model": "gpt-realtime-mini"})
    tool = {"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}
    conn.configure({"type": "realtime", "tools": [tool]})
    bad = {**tool, "name": "refund"}
    assert refused(conn, {"tools": [tool, bad]}).param == "session.tools[1]"


def test_first_allowed_voice() -> None:
    conn = RealtimeConnection(model="gpt-realtime")
    assert first_allowed_voice(conn.config, Policy()) is None
    assert first_allowed_voice(conn.config, Policy(allowed_voices=["*"])) is None
    patch = first_allowed_voice(conn.config, Policy(allowed_voices=["ma*", "cedar"]))
    assert patch == {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
    assert first_allowed_voice(conn.config, Policy(allowed_voices=["ma*"])) is None


def principal(**fields: object) -> Principal:
    base: dict[str, object] = {
        "key_id": "key_a",
        "key_prefix": "vx-aaaaaaa…",
        "tenant": "acme",
        "scopes": frozenset({"realtime"}),
        "user_hash": None,
        "client_secret_id": None,
        "policy": Policy(),
    }
    return Principal(**(base | fields))  # type: ignore[arg-type]


def test_who_may_act_on_a_call() -> None:
    owner = principal()
    assert principal().may_act_on(owner)
    assert principal(key_id="key_b").may_act_on(owner)  # same tenant, realtime scope
    assert not principal(key_id="key_b", scopes=frozenset({"client_secrets"})).may_act_on(owner)
    assert not principal(key_id="key_c", tenant="globex").may_act_on(owner)
    assert principal(key_id="key_c", tenant="globex", scopes=SCOPES).may_act_on(owner)  # admin
    assert not principal(key_id="key_c", tenant=None).may_act_on(principal(tenant=None))
    by_secret = principal(client_secret_id="cs_1")
    assert by_secret.may_act_on(principal(client_secret_id="cs_1"))
    assert not by_secret.may_act_on(principal(client_secret_id="cs_2"))
    assert not by_secret.may_act_on(owner)  # a secret reaches only calls it opened


def test_users_are_hashed() -> None:
    assert hash_user("alice") == hash_user("alice") != hash_user("bob")
    assert len(hash_user("alice")) == 64 and "alice" not in hash_user("alice")
