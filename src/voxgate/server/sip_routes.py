"""Call control for SIP calls, as the hosted API has it: ``POST /v1/realtime/calls/{call_id}/
accept | reject | refer`` (``/hangup`` is shared with WebRTC calls in `calls.py`), and outbound
calls, ``POST /v1/realtime/calls/outbound``. The ``openai`` SDK's ``client.realtime.calls``
methods speak these routes. A call lives on the replica whose SIP endpoint took it; call
control that reaches another replica is forwarded to it (`replicas.elsewhere`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..control.identity import Principal
from ..protocol.decode import load_json
from ..protocol.errors import ProtocolError
from . import replicas
from .auth import require_scope
from .calls import http_error
from .identity import identity
from .refusal import Refused, forbidden, too_many
from .state import AppState

if TYPE_CHECKING:
    from .sip_calls import PhoneCall, SipService

log = logging.getLogger(__name__)
router = APIRouter()
MAX_NUMBER_CHARS = 64


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.voxgate
    return state


async def _caller(state: AppState, request: Request) -> Principal:
    who = await state.controls.auth.authenticate(*identity(request), use=False)
    require_scope(who.principal, "realtime")
    return who.principal


def _sip(state: AppState) -> SipService | JSONResponse:
    if state.sip is None:
        return http_error(
            404,
            "SIP is not enabled on this server (set [sip] listen or VOXGATE_SIP_LISTEN).",
            "sip_disabled",
        )
    return state.sip


async def _body(request: Request) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = load_json(raw.decode("utf-8", "replace"), where="The request body")
    except ProtocolError as exc:
        return http_error(400, exc.message, exc.code, exc.param)
    if not isinstance(body, dict):
        return http_error(400, "The request body must be a JSON object.", "invalid_type")
    return body


async def _pending(
    state: AppState, request: Request, call_id: str, action: str
) -> tuple[SipService, PhoneCall, dict[str, Any]] | Response:
    """The SIP call waiting for an answer, if the caller may act on it; else the error."""
    sip = _sip(state)
    if isinstance(sip, JSONResponse):
        return sip
    try:
        principal = await _caller(state, request)
        phone = sip.pending(call_id)
        if phone is None and sip.calls.get(call_id) is None:
            other = await _elsewhere(state, request, call_id, action)
            if other is not None:
                return other
        if phone is None:
            return http_error(
                404,
                f"No SIP call with id '{call_id}' is waiting to be accepted or rejected "
                "(it was answered, rejected, hung up, or timed out).",
                "call_not_found",
                "call_id",
            )
        await _check_trunk_owner(state, principal, phone, action)
    except Refused as exc:
        return exc.response()
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    return sip, phone, body


async def _elsewhere(
    state: AppState, request: Request, call_id: str, action: str
) -> Response | None:
    """The owning replica's answer, when another replica holds the call."""
    path = action.removeprefix("sip_")
    return await replicas.elsewhere(state.shared, request, call_id, path, state.advertise_url)


async def _check_trunk_owner(
    state: AppState, principal: Principal, phone: PhoneCall, action: str
) -> None:
    """A trunk's calls are governed by its key: only that key, its tenant's keys, or an
    admin act on them."""
    owner = await state.controls.auth.authenticate(phone.trunk.key, None, use=False)
    if principal.may_act_on(owner.principal):
        state.controls.audit(action, principal, call_id=phone.id)
        return
    state.controls.audit(action, principal, code="call_not_owned", call_id=phone.id)
    raise forbidden(
        "call_not_owned",
        "This call came in on a trunk governed by another API key; only that key, a key of "
        "the same tenant, or an admin key may act on it.",
        "call_id",
    )


@router.post("/v1/realtime/calls/{call_id}/accept")
async def accept(request: Request, call_id: str) -> Response:
    state = _state(request)
    found = await _pending(state, request, call_id, "sip_accept")
    if isinstance(found, Response):
        return found
    sip, phone, body = found
    try:
        await sip.accept(phone, body)
    except Refused as exc:
        return exc.response()
    return Response(status_code=200)


@router.post("/v1/realtime/calls/{call_id}/reject")
async def reject(request: Request, call_id: str) -> Response:
    state = _state(request)
    found = await _pending(state, request, call_id, "sip_reject")
    if isinstance(found, Response):
        return found
    sip, phone, body = found
    status = body.get("status_code", 603)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 699:
        return http_error(
            400,
            f"Invalid 'status_code': {status!r}. Send a SIP status from 400 to 699 (default 603).",
            "invalid_value",
            "status_code",
        )
    sip.reject(phone, status)
    return Response(status_code=200)


@router.post("/v1/realtime/calls/{call_id}/refer")
async def refer(request: Request, call_id: str) -> Response:
    state = _state(request)
    sip = _sip(state)
    if isinstance(sip, JSONResponse):
        return sip
    try:
        principal = await _caller(state, request)
        phone = sip.calls.get(call_id)
        if phone is None:
            other = await _elsewhere(state, request, call_id, "refer")
            if other is not None:
                return other
        if phone is None or phone.session is None or phone.sip.state not in ("confirmed",):
            return http_error(
                404, f"No answered SIP call with id '{call_id}'.", "call_not_found", "call_id"
            )
        if not principal.may_act_on(phone.session.principal):
            raise forbidden("call_not_owned", "This call belongs to another API key.", "call_id")
        state.controls.audit("sip_refer", principal, call_id=call_id)
    except Refused as exc:
        return exc.response()
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    target = body.get("target_uri")
    if not isinstance(target, str) or not target.startswith(("sip:", "sips:", "tel:")):
        return http_error(
            400,
            "Send 'target_uri', a sip:, sips: or tel: URI to transfer the caller to.",
            "invalid_value",
            "target_uri",
        )
    sip.refer(phone, target)
    return Response(status_code=200)


@router.post("/v1/realtime/calls/outbound")
async def outbound(request: Request) -> Response:
    """Place a call: ``{"to", "from", "trunk", "session", "timeout_s"}``. Answers when the
    call is answered or has failed, with its progress (docs/telephony.md)."""
    state = _state(request)
    sip = _sip(state)
    if isinstance(sip, JSONResponse):
        return sip
    credential, safety_identifier = identity(request)
    try:
        principal = await _caller(state, request)
    except Refused as exc:
        return exc.response()
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    problem = _outbound_problem(sip, body)
    if problem is not None:
        return problem
    to, trunk_name = str(body["to"]), str(body["trunk"])
    trunk = sip.trunk_named(trunk_name)
    assert trunk is not None
    try:
        await _outbound_policy(state, principal, to)
        phone = await sip.place(
            trunk=trunk,
            to=to,
            from_=str(body.get("from") or "voxgate"),
            session_config=body.get("session") or {},
            credential=credential,
            safety_identifier=safety_identifier,
            timeout_s=float(body.get("timeout_s", 30)),
        )
    except Refused as exc:
        return exc.response()
    status = phone.progress[-1] if phone.progress else "failed"
    return JSONResponse(
        {
            "call_id": phone.id,
            "status": status,
            "progress": phone.progress,
            "sip_status": phone.sip_status,
            "session_id": phone.session.id if phone.session and status == "answered" else None,
        },
        status_code=200,
        headers={"Location": f"/v1/realtime/calls/{phone.id}"} if status == "answered" else None,
    )


def _outbound_problem(sip: SipService, body: dict[str, Any]) -> JSONResponse | None:
    for name in ("to", "trunk"):
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_NUMBER_CHARS:
            return http_error(
                400, f"Send '{name}' as a non-empty string.", "missing_required_parameter", name
            )
    to = str(body["to"])
    if not all(c.isalnum() or c in "+*#-._" for c in to):
        return http_error(
            400, f"'to' {to!r} is not a phone number or SIP user.", "invalid_value", "to"
        )
    trunk = sip.trunk_named(str(body["trunk"]))
    if trunk is None or trunk.outbound_uri is None:
        return http_error(
            400,
            f"No trunk named {body['trunk']!r} with an outbound_uri in [[sip.trunks]].",
            "invalid_value",
            "trunk",
        )
    session = body.get("session")
    if session is not None and not isinstance(session, dict):
        return http_error(400, "'session' must be an object.", "invalid_type", "session")
    timeout = body.get("timeout_s", 30)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 120:
        return http_error(
            400, "'timeout_s' must be 1 to 120 seconds.", "invalid_value", "timeout_s"
        )
    return None


async def _outbound_policy(state: AppState, principal: Principal, to: str) -> None:
    policy = principal.policy
    prefixes = policy.allowed_outbound_prefixes
    if prefixes is not None and not any(to.startswith(p) for p in prefixes):
        state.controls.audit("sip_outbound", principal, code="number_not_allowed", to=to)
        raise forbidden(
            "number_not_allowed",
            f"This key may not call {to!r}: its policy allows numbers starting with "
            f"{', '.join(prefixes) or 'nothing'} (allowed_outbound_prefixes).",
            "to",
        )
    limit = policy.outbound_calls_per_minute
    if limit is not None:
        minute = int(state.controls.clock() // 60)
        counter = f"dial:{principal.key_id or 'dev'}:{minute}"
        if await state.controls.shared.add(counter, 1, 60.0) > limit:
            state.controls.audit("sip_outbound", principal, code="rate_limit_exceeded", to=to)
            raise too_many(
                "rate_limit_exceeded",
                f"This key may place {limit} outbound call(s) per minute "
                "(policy outbound_calls_per_minute); try again in a minute.",
            )
    state.controls.audit("sip_outbound", principal, to=to)
