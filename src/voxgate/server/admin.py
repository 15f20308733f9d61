"""Admin REST routes (an ``admin``-scoped key): keys, tenants, client-secret revocation and
the audit log. The CLI does the same on the store directly (`voxgate keys …`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..control.identity import Principal
from ..storage.admin import AdminError
from .auth import require_scope
from .identity import identity
from .refusal import Refused
from .state import AppState

router = APIRouter(prefix="/v1/admin")
# How long a revocation marker lives in the shared state (the store keeps it for good;
# the marker only has to outlive the replicas' next poll of the store).
REVOCATION_TTL_S = 24 * 3600.0


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.voxgate
    return state


async def admin_principal(request: Request) -> Principal:
    credential, safety_identifier = identity(request)
    who = await _state(request).controls.auth.authenticate(credential, safety_identifier, use=False)
    require_scope(who.principal, "admin")
    return who.principal


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminError(f"The body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise AdminError("The body must be a JSON object.", "invalid_type")
    return body


def _error(exc: AdminError | Refused) -> JSONResponse:
    if isinstance(exc, Refused):
        return exc.response()
    error = {
        "message": exc.message,
        "type": "invalid_request_error",
        "param": exc.param,
        "code": exc.code,
    }
    return JSONResponse({"error": error}, status_code=exc.status)


def _unknown(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise AdminError(f"Unknown parameter: '{extra[0]}'.", "unknown_parameter", extra[0])


@router.post("/keys")
async def create_key(request: Request) -> Response:
    try:
        actor = await admin_principal(request)
        body = await _body(request)
        _unknown(body, {"name", "tenant", "scopes", "policy"})
        key, value = await _state(request).controls.admin.create_key(
            name=body.get("name"),
            tenant=body.get("tenant"),
            scopes=body.get("scopes"),
            policy=body.get("policy"),
            actor=actor.key_id,
        )
    except (AdminError, Refused) as exc:
        return _error(exc)
    await _state(request).controls.auth.refresh()
    shown = key.to_json()
    return JSONResponse(
        {
            "id": key.id,
            "key": value,
            "name": key.name,
            "tenant": key.tenant,
            "scopes": shown["scopes"],
            "policy": shown["policy"],
        },
        status_code=201,
    )


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    try:
        await admin_principal(request)
    except Refused as exc:
        return exc.response()
    keys = await _state(request).controls.keys.list()
    return JSONResponse({"object": "list", "data": [k.to_json() for k in keys]})


@router.patch("/keys/{key_id}")
async def update_key(request: Request, key_id: str) -> Response:
    try:
        actor = await admin_principal(request)
        body = await _body(request)
        _unknown(body, {"policy", "scopes"})
        key = await _state(request).controls.admin.update_key(
            key_id, policy=body.get("policy"), scopes=body.get("scopes"), actor=actor.key_id
        )
    except (AdminError, Refused) as exc:
        return _error(exc)
    await _state(request).controls.auth.refresh()
    return JSONResponse(key.to_json())


@router.delete("/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    try:
        actor = await admin_principal(request)
        state = _state(request)
        key = await state.controls.admin.revoke_key(key_id, actor=actor.key_id)
    except (AdminError, Refused) as exc:
        return _error(exc)
    await state.controls.shared.revoke("key", key.id, REVOCATION_TTL_S)
    return JSONResponse(key.to_json())


@router.put("/tenants/{tenant}")
async def set_tenant(request: Request, tenant: str) -> Response:
    try:
        actor = await admin_principal(request)
        body = await _body(request)
        _unknown(body, {"policy"})
        policy = await _state(request).controls.admin.set_tenant(
            tenant, body.get("policy"), actor=actor.key_id
        )
    except (AdminError, Refused) as exc:
        return _error(exc)
    await _state(request).controls.auth.refresh()
    return JSONResponse({"tenant": tenant, "policy": policy.to_json()})


@router.get("/tenants")
async def list_tenants(request: Request) -> Response:
    try:
        await admin_principal(request)
    except Refused as exc:
        return exc.response()
    tenants = await _state(request).controls.tenants.all()
    data = [{"tenant": name, "policy": p.to_json()} for name, p in sorted(tenants.items())]
    return JSONResponse({"object": "list", "data": data})


@router.delete("/client_secrets/{secret_id}")
async def revoke_client_secret(request: Request, secret_id: str) -> Response:
    try:
        actor = await admin_principal(request)
        state = _state(request)
        secret = await state.controls.admin.revoke_secret(secret_id, actor=actor.key_id)
    except (AdminError, Refused) as exc:
        return _error(exc)
    await state.controls.shared.revoke("secret", secret.id, REVOCATION_TTL_S)
    return JSONResponse({"id": secret.id, "revoked_at": int(secret.revoked_at or 0)})


@router.get("/audit")
async def audit(
    request: Request,
    start_time: float | None = None,
    end_time: float | None = None,
    action: str | None = None,
    key_id: str | None = None,
    session_id: str | None = None,
    limit: int = 1000,
    kind: str | None = None,
) -> Response:
    try:
        await admin_principal(request)
    except Refused as exc:
        return exc.response()
    if not 1 <= limit <= 10_000:
        return _error(AdminError("'limit' must be between 1 and 10000.", "invalid_value", "limit"))
    # ``kind`` names a family of records ("tool": every tool decision); it is the action.
    if kind is not None and action is not None and kind != action:
        return _error(AdminError("Give 'kind' or 'action', not both.", "invalid_value", "kind"))
    action = action or kind
    state = _state(request)
    await state.controls.recorder.flush()
    rows = await state.controls.audit_log.query(
        start_time=start_time,
        end_time=end_time,
        action=action,
        key_id=key_id,
        session_id=session_id,
        limit=limit,
    )
    return JSONResponse({"object": "list", "data": rows})
