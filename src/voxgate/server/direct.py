"""Direct mode: a model routed to an upstream with ``direct = true`` has its WebRTC media go
straight to the upstream, while voxgate stays the backend.

- ``POST /v1/realtime/calls``: the call is admitted as any session is (credential, policy,
  client-secret binding, concurrency, budgets); then the SDP offer and the session
  configuration (the client's, with the secret's binding over it) go to the upstream's
  ``/v1/realtime/calls`` with the server's key and the caller's safety identifier. The
  upstream's answer comes back with its call id in ``Location``, and voxgate attaches its own
  sideband to the call (`session.direct.DirectDriver`): usage into the ledger, budgets and the
  duration limit hang it up, the server tools (offered in that configuration) run there, and
  a configuration the browser changes against the policy is reverted.
- ``POST /v1/realtime/client_secrets``: checked against the policy as usual, then minted by
  the upstream with the same configuration and safety identifier; voxgate records the secret
  (its hash, binding and expiry, like its own, so that it is listed, audited and revocable
  here) and returns the upstream's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from ..control.identity import Principal, hash_secret
from ..control.secrets import DEFAULT_USES, ClientSecret, generate_secret
from ..engines.upstream import Upstream
from ..engines.upstream.calls import CallFailed, create_call, mint_client_secret
from ..session.direct import DirectDriver, hang_up_unless_ended
from ..session.relay_tools import with_server_tools
from ..session.session import Session
from ..transports.headless import HeadlessTransport
from ..transports.sdp_check import offer_problem
from . import replicas
from .admission import admit
from .refusal import Refused
from .routing import route
from .state import AppState

log = logging.getLogger(__name__)


def direct_upstream(state: AppState, model: str) -> Upstream | None:
    """The upstream in direct mode that ``model`` is routed to, if it is."""
    upstream = route(state.upstreams, model)
    return upstream if upstream is not None and upstream.direct else None


def requested_model(
    state: AppState,
    model: str | None,
    patch: dict[str, Any] | None,
    bound: dict[str, Any] | None,
) -> str:
    """The model a new session will have: the secret's binding, else the one asked for
    (query or session part), else the server's default (admission checks they agree)."""
    for source in (bound, patch):
        if source and isinstance(source.get("model"), str):
            return str(source["model"])
    return model or state.settings.default_model


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it, objects merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def upstream_session(
    principal: Principal,
    model: str,
    bound: dict[str, Any] | None,
    patch: dict[str, Any] | None,
    config_voice: str | None = None,
) -> dict[str, Any]:
    """The session configuration the upstream is given: what the client asked for, with the
    client secret's binding over it, the model that was admitted, and the voice admission
    chose where the policy forbids the default one."""
    session = merged(patch or {}, bound or {})
    for key in ("id", "object", "expires_at", "client_secret"):
        session.pop(key, None)
    session["type"] = "realtime"
    session["model"] = model
    voice = ((session.get("audio") or {}).get("output") or {}).get("voice")
    if voice is None and config_voice is not None and principal.policy.allowed_voices:
        session = merged(session, {"audio": {"output": {"voice": config_voice}}})
    return session


def refused(exc: CallFailed) -> JSONResponse:
    type_ = "server_error" if exc.status >= 500 else "invalid_request_error"
    return Refused(exc.code, exc.message, exc.status, type_=type_).response()


async def create_direct_call(
    state: AppState,
    upstream: Upstream,
    *,
    credential: str | None,
    safety_identifier: str | None,
    bound: dict[str, Any] | None,
    model: str | None,
    offer: str,
    session_patch: dict[str, Any] | None,
) -> Response:
    driver = DirectDriver(upstream, safety_identifier)
    try:
        session = await admit(
            state,
            credential=credential,
            safety_identifier=safety_identifier,
            transport=HeadlessTransport(),
            model=model,
            session_patch=session_patch,
            kind="webrtc",
            driver=driver,
            engine=upstream.engine,
        )
    except Refused as exc:
        return exc.response()
    principal = session.principal
    assert principal is not None  # admitted sessions always have one
    if (problem := offer_problem(offer)) is not None:
        await _unadmit(state, session)
        return Refused("invalid_offer", problem, 400, param="sdp").response()
    config = session.connection.config
    forwarded = upstream_session(
        principal, config.model, bound or principal.bound, session_patch, config.voice
    )
    if session.tools is not None:  # the upstream's model calls them; voxgate's sideband runs them
        driver.run_tools(session.tools)
        if forwarded.get("tool_choice") != "none":
            forwarded["tools"] = with_server_tools(
                forwarded.get("tools") or [], session.tools.broker
            )
    try:
        call = await create_call(upstream, offer, forwarded, safety_identifier)
    except CallFailed as exc:
        await _unadmit(state, session)
        state.controls.audit("direct_call", principal, code=exc.code, upstream=upstream.name)
        return refused(exc)
    except BaseException:  # the request was cancelled (client gone) or a bug: free the slot
        await asyncio.shield(_unadmit(state, session))
        raise
    driver.call_id, driver.given = call.call_id, forwarded
    session_id = session.id

    def audit(action: str, code: str | None, detail: dict[str, Any]) -> None:
        state.controls.audit(action, principal, code=code, session_id=session_id, **detail)

    driver.audit = audit
    try:
        # Before the answer goes out: a hang-up or sideband attach may follow at once, on
        # any replica.
        await state.shared.register_call(call.call_id, state.advertise_url, replicas.CALL_TTL_S)
    except BaseException:
        await asyncio.shield(_unadmit(state, session))
        await asyncio.shield(hang_up_unless_ended(driver))  # no call runs unwatched
        raise

    async def close() -> None:
        await replicas.forget_call(state.shared, call.call_id)
        await hang_up_unless_ended(driver)

    state.manager.serve_call(call.call_id, session, close)
    state.controls.audit(
        "direct_call",
        principal,
        session_id=session.id,
        call_id=call.call_id,
        upstream=upstream.name,
    )
    log.info("direct call %s on %s governs session %s", call.call_id, upstream.name, session.id)
    return Response(
        call.answer_sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call.call_id}"},
    )


async def _unadmit(state: AppState, session: Session) -> None:
    await state.manager.release(session)
    if session.principal is not None and session.principal.client_secret_id is not None:
        await state.controls.secrets.give_back(session.principal.client_secret_id)


async def mint_direct_secret(
    state: AppState,
    upstream: Upstream,
    principal: Principal,
    safety_identifier: str | None,
    bound: dict[str, Any],
    ttl: int,
    config_voice: str | None,
    model: str,
) -> tuple[dict[str, Any], str]:
    """Mint the client secret upstream and record it here: the upstream's answer and the id
    of voxgate's record. Raises `CallFailed` (audited)."""
    controls = state.controls
    session = upstream_session(principal, model, bound, None, config_voice)
    body = {"expires_after": {"anchor": "created_at", "seconds": ttl}, "session": session}
    try:
        minted = await mint_client_secret(upstream, body, safety_identifier)
    except CallFailed as exc:
        controls.audit("client_secret_mint", principal, code=exc.code, upstream=upstream.name)
        raise
    now = controls.clock()
    expires_at = minted.get("expires_at")
    expires = float(expires_at) if isinstance(expires_at, int | float) else now + ttl
    shown = minted.get("session")
    secret = ClientSecret(
        id=generate_secret().id,
        key_id=principal.key_id,
        tenant=principal.tenant,
        user_hash=principal.user_hash,
        session=shown if isinstance(shown, dict) else session,
        bound=bound,
        policy=principal.policy.to_json(),
        created_at=now,
        expires_at=expires,
        max_uses=principal.policy.client_secret_uses or DEFAULT_USES,
    )
    # Stored by its hash like voxgate's own: listed, audited, and revocable here (sessions
    # opened here with it are governed by its binding; the upstream keeps its own count).
    await controls.secret_writer.insert(secret, hash_secret(minted["value"]))
    controls.audit(
        "client_secret_mint",
        principal,
        client_secret_id=secret.id,
        expires_at=int(expires),
        upstream=upstream.name,
    )
    return minted, secret.id
