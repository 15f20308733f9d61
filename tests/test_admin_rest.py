"""The admin REST API as an operator's script uses it: keys (created, listed by prefix,
updated, revoked), tenants, the audit log, and who may call it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import websockets

from _controls import MODEL, Admin, keyed_server, refusal


@pytest.fixture
async def setup(start_server: Any, database_url: str) -> Any:
    server = keyed_server(start_server, database_url)
    admin = Admin(server)
    yield server, admin
    await admin.aclose()


async def test_keys_lifecycle(setup: Any) -> None:
    server, admin = setup
    made = await admin.create_key(
        name="backend", tenant="acme", scopes=["realtime"], policy={"max_session_seconds": 60}
    )
    assert set(made) == {"id", "key", "name", "tenant", "scopes", "policy"}
    assert made["policy"] == {"max_session_seconds": 60.0}
    listed = (await admin.http.get("/admin/keys")).json()["data"]
    [row] = [k for k in listed if k["id"] == made["id"]]
    assert set(row) == {
        "id", "name", "tenant", "scopes", "policy", "prefix", "created_at", "revoked_at"
    }  # fmt: skip
    assert row["prefix"] == made["key"][:10] + "…" and made["key"] not in str(listed)
    patched = await admin.http.patch(
        f"/admin/keys/{made['id']}",
        json={"scopes": ["realtime", "client_secrets"], "policy": {"allowed_voices": ["marin"]}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["scopes"] == ["client_secrets", "realtime"]
    assert patched.json()["policy"] == {"allowed_voices": ["marin"]}
    revoked = await admin.http.delete(f"/admin/keys/{made['id']}")
    assert revoked.json()["revoked_at"] is not None
    assert (await refusal(server, made["key"])).error.code == "api_key_revoked"
    missing = await admin.http.patch("/admin/keys/key_missing", json={"policy": {}})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


async def test_bad_requests_name_what_to_fix(setup: Any) -> None:
    _, admin = setup
    cases = [
        ({"name": "x", "policy": {"max_sessions": 3}}, "policy.max_sessions"),
        ({"name": "x", "policy": {"max_session_seconds": -1}}, "policy.max_session_seconds"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"scopes": ["realtime"]}, "name"),
        ({"name": "x", "colour": "blue"}, "colour"),
    ]
    for body, param in cases:
        response = await admin.http.post("/admin/keys", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, response.json()
    not_json = await admin.http.post("/admin/keys", content=b"{nope")
    assert not_json.json()["error"]["code"] == "invalid_json"


async def test_only_admin_keys_reach_the_admin_api(setup: Any) -> None:
    server, admin = setup
    plain = await admin.create_key(scopes=["realtime", "client_secrets"])
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        anonymous = await http.get("/admin/keys")
        assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (
            401,
            "invalid_api_key",
        )
        headers = {"Authorization": f"Bearer {plain['key']}"}
        for method, path in [
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("PUT", "/admin/tenants/acme"),
            ("DELETE", "/admin/client_secrets/cs_x"),
            ("GET", "/admin/audit"),
        ]:
            response = await http.request(method, path, headers=headers, json={})
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "insufficient_scope"


async def test_tenants_and_the_audit_log(setup: Any) -> None:
    server, admin = setup
    put = await admin.http.put("/admin/tenants/acme", json={"policy": {"max_session_seconds": 5}})
    assert put.json() == {"tenant": "acme", "policy": {"max_session_seconds": 5.0}}
    tenants = (await admin.http.get("/admin/tenants")).json()["data"]
    assert tenants == [{"tenant": "acme", "policy": {"max_session_seconds": 5.0}}]
    made = await admin.create_key(tenant="acme")
    assert (await refusal(server, made["key"])).type == "session.created"
    assert (await refusal(server, "sk-wrong")).error.code == "invalid_api_key"
    admissions = (await admin.http.get("/admin/audit", params={"action": "admission"})).json()
    codes = [(r["key_id"], r["code"]) for r in admissions["data"]]
    assert (made["id"], None) in codes and (None, "invalid_api_key") in codes
    [ok] = [r for r in admissions["data"] if r["key_id"] == made["id"]]
    assert ok["tenant"] == "acme" and ok["session_id"].startswith("sess_")
    changes = (await admin.http.get("/admin/audit", params={"action": "tenant_set"})).json()
    assert changes["data"][0]["tenant"] == "acme"


async def test_a_client_secret_in_the_browser_subprotocol(setup: Any) -> None:
    server, admin = setup
    made = await admin.create_key(scopes=["client_secrets", "realtime"])
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        minted = await http.post(
            "/realtime/client_secrets",
            json={},
            headers={"Authorization": f"Bearer {made['key']}"},
        )
    secret = minted.json()["value"]
    protocols = ["realtime", f"openai-insecure-api-key.{secret}"]
    url = f"{server.ws_url}?model={MODEL}"
    async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert '"session.created"' in str(await ws.recv())
