"""WebRTC calls over HTTP: ``POST /v1/realtime/calls`` (the SDP offer/answer exchange) and
``POST /v1/realtime/calls/{call_id}/hangup``.

The offer comes either as raw SDP (``application/sdp``, what browsers send) or as a multipart
form with an ``sdp`` part and an optional ``session`` part (what the ``openai`` SDK's
``realtime.calls.create`` sends). The answer is complete (no trickle ICE); the call id is the
last segment of ``Location``, where clients look for it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from ..control.identity import Principal
from ..protocol.decode import load_json
from ..protocol.errors import ProtocolError
from ..session.session import Session
from ..transports.sdp_check import offer_problem
from ..transports.webrtc import WebRTCCall
from . import direct, replicas
from .admission import admit
from .auth import require_scope
from .http_limits import RequestRefused
from .identity import identity
from .refusal import Refused, forbidden
from .state import AppState

log = logging.getLogger(__name__)
MAX_SDP_BYTES = 64 * 1024
# The whole offer request: the SDP and the session configuration sent with it.
MAX_CALL_BODY_BYTES = 4 * MAX_SDP_BYTES


def http_error(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    type_: str = "invalid_request_error",
) -> JSONResponse:
    """An OpenAI-shaped HTTP error body."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)


async def create_call(state: AppState, request: Request, model: str | None) -> Response:
    credential, safety_identifier = identity(request)
    try:  # refuse a bad credential before reading a body
        who = await state.controls.auth.authenticate(credential, safety_identifier, use=False)
    except Refused as exc:
        return exc.response()
    parsed = await _read_offer(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    offer, session_patch = parsed
    wanted = direct.requested_model(state, model, session_patch, who.session)
    if (upstream := direct.direct_upstream(state, wanted)) is not None:
        return await direct.create_direct_call(
            state,
            upstream,
            credential=credential,
            safety_identifier=safety_identifier,
            bound=who.session,
            model=model,
            offer=offer,
            session_patch=session_patch,
        )
    settings = state.settings
    call = WebRTCCall(
        settings.ice_server_configs, connect_timeout_s=settings.webrtc_connect_timeout_s
    )
    try:
        session = await admit(
            state,
            credential=credential,
            safety_identifier=safety_identifier,
            transport=call.events,
            model=model,
            session_patch=session_patch,
            playout=call.playout,
            kind="webrtc",
        )
    except Refused as exc:
        await call.close()
        return exc.response()
    # After admission, so that a bad session part is reported first.
    if (problem := offer_problem(offer)) is not None:
        await _unadmit(state, session)
        await call.close()
        return http_error(400, problem, "invalid_offer", "sdp")
    call.microphone = session.track_audio
    call.on_gone = lambda why: session.end("client_closed", message=why)
    try:
        answer = await call.answer(offer)
        # Before the answer goes out: a sideband attach may follow at once, on any replica.
        await state.shared.register_call(call.id, state.advertise_url, replicas.CALL_TTL_S)
    except ValueError as exc:
        await state.manager.release(session)
        await call.close()
        return http_error(400, str(exc), "invalid_offer", "sdp")
    except BaseException:
        await state.manager.release(session)
        await call.close()
        raise

    async def close() -> None:
        await replicas.forget_call(state.shared, call.id)
        await call.close()

    state.manager.serve_call(call.id, session, close)
    log.info("call %s started session %s", call.id, session.id)
    return Response(
        answer,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call.id}"},
    )


async def _unadmit(state: AppState, session: Session) -> None:
    """Undo an admission whose call could not be set up: the slot, and the client secret's
    use."""
    await state.manager.release(session)
    if session.principal is not None and session.principal.client_secret_id is not None:
        await state.controls.secrets.give_back(session.principal.client_secret_id)


def check_owner(state: AppState, principal: Principal, session: Session, action: str) -> None:
    """Refuse acting on a call that belongs to another caller (issue: calls belong to the key
    that created them, to keys of its tenant with the realtime scope, and to admins)."""
    if principal.may_act_on(session.principal):
        state.controls.audit(action, principal, session_id=session.id)
        return
    state.controls.audit(action, principal, code="call_not_owned", session_id=session.id)
    raise forbidden(
        "call_not_owned",
        "This call was created by another API key; only that key, a key of the same tenant, "
        "or an admin key may act on it.",
        "call_id",
    )


async def hangup(state: AppState, request: Request, call_id: str) -> Response:
    credential, safety_identifier = identity(request)
    try:
        who = await state.controls.auth.authenticate(credential, safety_identifier, use=False)
        require_scope(who.principal, "realtime")
        session = state.manager.live_call(call_id)
        if session is None:
            other = await replicas.elsewhere(
                state.shared, request, call_id, "hangup", state.advertise_url
            )
            if other is not None:
                return other
        if session is None and state.sip is not None and state.sip.pending(call_id):
            return await hangup_pending(state, who.principal, call_id)
        if session is None:
            return http_error(
                404, f"No live call with id '{call_id}'.", "call_not_found", "call_id"
            )
        check_owner(state, who.principal, session, "hangup")
    except Refused as exc:
        return exc.response()
    session.end("hangup")
    return Response(status_code=200)


async def hangup_pending(state: AppState, principal: Principal, call_id: str) -> Response:
    """A SIP call not yet accepted: hanging up declines it (603)."""
    assert state.sip is not None
    phone = state.sip.pending(call_id)
    if phone is not None:
        owner = await state.controls.auth.authenticate(phone.trunk.key, None, use=False)
        if not principal.may_act_on(owner.principal):
            raise forbidden("call_not_owned", "This call belongs to another API key.", "call_id")
        state.sip.reject(phone, 603)
    return Response(status_code=200)


async def _read_offer(request: Request) -> tuple[str, dict[str, Any] | None] | JSONResponse:
    """The offer SDP and the session configuration sent with it, or the error to answer."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: Any = None
    if content_type == "application/sdp":
        body = await request.body()
        if len(body) > MAX_SDP_BYTES:
            return http_error(413, f"The SDP offer is over {MAX_SDP_BYTES} bytes.", "too_large")
        offer = body.decode("utf-8", "replace")
    elif content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=2, max_fields=4, max_part_size=MAX_SDP_BYTES)
        except RequestRefused:  # over the size limit or stalled: answered by the middleware
            raise
        except Exception as exc:  # starlette raises its own MultiPartException and friends
            return http_error(400, f"The multipart body could not be read: {exc}", "invalid_body")
        offer_part, session_part = form.get("sdp"), form.get("session")
        offer = await _text(offer_part)
        raw_session = await _text(session_part) if session_part is not None else None
        if raw_session:
            try:
                session = load_json(raw_session, where="The 'session' part", prefix="session")
            except ProtocolError as exc:
                return http_error(400, exc.message, exc.code, exc.param or "session")
            if not isinstance(session, dict):
                return http_error(
                    400, "The 'session' part must be a JSON object.", "invalid_type", "session"
                )
    else:
        return http_error(
            415,
            "Send the SDP offer as 'Content-Type: application/sdp', or as a multipart form "
            "with an 'sdp' part (and an optional 'session' part).",
            "unsupported_content_type",
        )
    if not offer.strip():
        return http_error(400, "Missing the SDP offer.", "missing_required_parameter", "sdp")
    return offer, session


async def _text(part: str | UploadFile | None) -> str:
    if part is None:
        return ""
    if isinstance(part, UploadFile):
        return (await part.read()).decode("utf-8", "replace")
    return part
