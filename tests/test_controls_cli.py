"""`voxgate keys|tenants|secrets|audit|db` on the server's store: the first key exists before
the server starts, and a running server sees what the commands change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _controls import MODEL, client, engines, next_event, refusal

VOXGATE = str(Path(sys.executable).with_name("voxgate"))


async def within_a_second(server: Any, key: str, code: str) -> None:
    """A connection attempt is refused with ``code`` soon after the change: servers poll the
    store every 0.1 s; the deadline leaves room for a busy machine."""
    deadline = time.monotonic() + 2.0
    while True:
        event = await refusal(server, key)
        if event.type == "error" and event.error.code == code:
            return
        assert time.monotonic() < deadline, f"still {event.type} two seconds after the change"


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Any:
    env = {**os.environ, "VOXGATE_DATABASE_URL": database_url, "VOXGATE_DATA_DIR": str(tmp_path)}
    env.pop("VOXGATE_API_KEYS", None)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([VOXGATE, *args], capture_output=True, text=True, timeout=60, env=env)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


async def test_keys_from_the_shell_govern_a_running_server(
    cli: Any, start_server: Any, database_url: str
) -> None:
    assert "up to date" in cli("db", "upgrade").stdout
    plain = cli("keys", "create", "--name", "backend", "--tenant", "acme").stdout
    key = plain.strip().splitlines()[-1]  # the key alone on the last line
    made = json.loads(
        cli("keys", "create", "--name", "ops", "--scopes", "realtime,admin", "--json").stdout
    )
    assert set(made) == {"id", "key", "name", "tenant", "scopes", "policy"}
    assert made["scopes"] == ["admin", "realtime"]
    listed = json.loads(cli("keys", "list", "--json").stdout)["data"]
    assert [k["name"] for k in listed] == ["backend", "ops"]
    assert key not in json.dumps(listed) and made["key"] not in json.dumps(listed)
    assert listed[0]["prefix"] == key[:10] + "…"
    backend_id = listed[0]["id"]

    server = start_server(engines(), database_url=database_url)
    # Keys exist, so development mode is over: an unknown key is refused.
    assert (await refusal(server, "sk-made-up")).error.code == "invalid_api_key"
    async with client(server, key) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).type == "session.created"
        # A policy change applies to admissions within a second.
        cli("tenants", "set", "acme", "--policy", '{"allowed_models": ["gpt-realtime-mini"]}')
        await within_a_second(server, key, "model_not_allowed")
        cli("tenants", "set", "acme", "--policy", "{}")
        cli("keys", "update", backend_id, "--policy", '{"max_concurrent_sessions": 1}')
        await within_a_second(server, key, "concurrent_sessions_exceeded")
        # Revoking from the shell ends the live session with a reason.
        assert backend_id in cli("keys", "revoke", backend_id).stdout
        ended = await next_event(conn, timeout_s=10)
        assert (ended.type, ended.error.code) == ("error", "api_key_revoked")
    assert (await refusal(server, key)).error.code == "api_key_revoked"

    audit = [json.loads(line) for line in cli("audit", "--json").stdout.splitlines()]
    actions = [(r["action"], r["code"]) for r in audit]
    assert ("key_created", None) in actions and ("key_revoked", None) in actions
    assert ("tenant_set", None) in actions
    assert ("admission", "model_not_allowed") in actions
    assert ("admission", "api_key_revoked") in actions
    assert ("session_end", "api_key_revoked") in actions
    assert key not in json.dumps(audit)


def test_bad_input_is_refused_plainly(cli: Any) -> None:
    bad_scope = cli("keys", "create", "--name", "x", "--scopes", "root", ok=False)
    assert bad_scope.returncode == 2 and "Unknown scope 'root'" in bad_scope.stderr
    bad_policy = cli("keys", "create", "--name", "x", "--policy", '{"max_sessions": 1}', ok=False)
    assert bad_policy.returncode == 2 and "max_sessions" in bad_policy.stderr
    not_json = cli("tenants", "set", "acme", "--policy", "{nope", ok=False)
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    missing = cli("secrets", "revoke", "cs_missing", ok=False)
    assert missing.returncode == 1 and "cs_missing" in missing.stderr


def test_serve_beyond_loopback_needs_a_key(cli: Any) -> None:
    refused = cli("serve", "--host", "0.0.0.0", "--port", "1", ok=False)
    assert refused.returncode == 2 and "voxgate keys create" in refused.stderr


async def test_the_first_key_ends_development_mode_of_a_running_server(
    cli: Any, start_server: Any, database_url: str
) -> None:
    server = start_server(engines(), database_url=database_url)
    assert (await refusal(server, "anything")).type == "session.created"  # development mode
    key = cli("keys", "create", "--name", "first").stdout.strip().splitlines()[-1]
    await within_a_second(server, "anything", "invalid_api_key")
    assert (await refusal(server, key)).type == "session.created"
