"""The one place a session is admitted, whatever the transport (WebSocket, WebRTC, and the
telephony and relay paths that come later): authenticate, check scope and capacity, apply
the client secret's binding and the policy, take the concurrency leases, build the Session
and register it. Every decision is audited with its code.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from ..control.budgets import admission_refusal
from ..control.guard import POLICY_CODES, PolicyGuard, first_allowed_voice
from ..control.identity import Principal
from ..control.policy import Policy
from ..control.usage import EMBEDDED_ENGINE
from ..engines import tokens
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..session import manager as registry
from ..session.driver import Driver
from ..session.relay import RelayDriver
from ..session.session import Session, SessionLimits
from ..session.tool_flow import SessionTools
from ..session.transport import Playout, Transport
from . import mcp_setup
from .auth import require_scope
from .handover import relay_driver
from .phone_media import apply_media_policy
from .refusal import Refused, forbidden, too_many
from .routing import route
from .state import AppState
from .tools import session_tools

log = logging.getLogger(__name__)


async def admit(
    state: AppState,
    *,
    credential: str | None,
    safety_identifier: str | None,
    transport: Transport,
    model: str | None,
    session_patch: dict[str, Any] | None = None,
    playout: Playout | None = None,
    kind: str = "websocket",
    intent: str | None = None,
    driver: Driver | None = None,
    engine: str = EMBEDDED_ENGINE,
) -> Session:
    """An admitted, registered Session (serve it with ``state.manager.serve``, or release it
    with ``state.manager.release`` if the transport's set-up fails); raises Refused.
    ``driver`` (and the ``engine`` that names it in the ledger) serves the session where the
    caller chose (direct mode); otherwise the routing does."""
    controls = state.controls
    principal: Principal | None = None
    secret_used: str | None = None
    try:
        who = await controls.auth.authenticate(credential, safety_identifier)
        principal, secret_used = who.principal, who.secret_used
        require_scope(principal, "realtime")
        _capacity(state)
        await _budgets(state, principal)
        connection, initial = _connection(
            state, principal, model, who.session, session_patch, intent
        )
        tools = session_tools(state, principal, connection.session_id)
        if driver is None:
            relay = _relay(state, principal, connection, initial, safety_identifier, tools)
            engine = relay.upstream.engine if relay is not None else EMBEDDED_ENGINE
            driver = relay
        ledger = state.ledger
        # Where the server plays the reply itself, generation may run further ahead.
        base = state.playout_limits if playout is not None else state.limits
        session = Session(
            connection,
            state.engines,
            state.metrics.meter(transport),
            limits=limits_for(base, principal.policy),
            playout=playout,
            principal=principal,
            observer=(
                ledger.observer(controls, principal, connection, kind, engine) if ledger else None
            ),
            driver=driver,
            tools=tools,
        )
        mcp_setup.wire(session, controls, principal)
        await _take_leases(state, principal, session.id)
        try:  # again, with no await between the check and the registration
            _capacity(state)
        except Refused:
            await _release_leases(state, principal, session.id)
            raise
    except Refused as exc:
        controls.audit("admission", principal, code=exc.code, transport=kind, **exc.subject)
        if secret_used is not None:
            await controls.secrets.give_back(secret_used)
        raise
    apply_media_policy(state, session, principal, kind)
    state.manager.hold(session, lambda ended: _finalize(state, ended))
    controls.audit("admission", principal, session_id=session.id, transport=kind, engine=engine)
    log.info("admitted session %s for %s over %s on %s", session.id, principal.label, kind, engine)
    return session


def _capacity(state: AppState) -> None:
    try:
        state.manager.admit()
    except registry.AdmissionRefused as exc:
        status = 503 if exc.code == "server_shutting_down" else 429
        raise Refused(exc.code, exc.message, status, type_="server_error") from None


async def _budgets(state: AppState, principal: Principal) -> None:
    """A cross-session budget already spent refuses the session (it would be cut off at once)."""
    controls = state.controls
    refusal = await admission_refusal(principal, controls.shared, controls.clock())
    if refusal is not None:
        raise too_many(*refusal)


def _connection(
    state: AppState,
    principal: Principal,
    model: str | None,
    bound: dict[str, Any] | None,
    patch: dict[str, Any] | None,
    intent: str | None = None,
) -> tuple[RealtimeConnection, dict[str, Any]]:
    """The session's connection, configured, and that configuration as a patch (what a
    relayed session sends its upstream first: the binding, the policy's voice, the call's
    session)."""
    bound_model = (bound or {}).get("model")
    if model is not None and bound_model is not None and model != bound_model:
        raise forbidden(
            "bound_by_client_secret",
            f"This client secret is bound to the model '{bound_model}'; connect with that "
            f"model (or none) instead of '{model}'.",
            "model",
        )
    connection = RealtimeConnection(
        model=model or state.settings.default_model,
        count_tokens=tokens.count_tokens,
        instructions=state.settings.instructions,
        intent=intent,
        prompts=state.prompts,
        transcription_logprobs=state.transcription_logprobs,
        limits=state.connection_limits,
    )
    guard = PolicyGuard(principal.policy, principal.bound)
    mcp_setup.prepare(connection, state.settings, principal)
    initial: dict[str, Any] = {}
    try:
        if bound:
            connection.configure(bound)
            initial = merged(initial, bound)
        if (voice := first_allowed_voice(connection.config, principal.policy)) is not None:
            connection.configure(voice)
            initial = merged(initial, voice)
        guard.check_config(connection.config)
        connection.guard = guard
        if patch is not None:
            connection.configure(patch)
            initial = merged(initial, patch)
    except ProtocolError as exc:
        status = 403 if exc.code in POLICY_CODES else 400
        param = f"session.{exc.param.removeprefix('session.')}" if exc.param else "session"
        raise Refused(exc.code or "invalid_value", exc.message, status, param=param) from None
    return connection, initial


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``, objects merged key by key (as ``session.update`` merges)."""
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        out[key] = (
            merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def _relay(
    state: AppState,
    principal: Principal,
    connection: RealtimeConnection,
    initial: dict[str, Any],
    safety_identifier: str | None,
    tools: SessionTools | None = None,
) -> RelayDriver | None:
    """A relay to the upstream that serves the session's model; None: the embedded pipeline
    serves it. Transcription sessions stay embedded."""
    if connection.transcription is not None:
        return None
    upstream = route(state.upstreams, connection.config.model)
    if upstream is None:
        return None
    first = {"type": "realtime", **initial} if initial else None
    return relay_driver(state, principal, connection, upstream, first, safety_identifier, tools)


def limits_for(base: SessionLimits, policy: Policy) -> SessionLimits:
    """The server's limits, tightened by the policy's duration and idle timeout."""
    duration = base.max_duration_s
    if policy.max_session_seconds is not None:
        duration = min(duration, policy.max_session_seconds)
    idle = base.idle_timeout_s
    if policy.idle_timeout_seconds is not None:
        idle = min(idle or policy.idle_timeout_seconds, policy.idle_timeout_seconds)
    return replace(base, max_duration_s=duration, idle_timeout_s=idle)


# Every session holds its key's and its user's leases, limited or not, so that a limit set
# later (a policy change while sessions run) counts the sessions already open.
UNLIMITED = 2**31 - 1


def _lease_scopes(principal: Principal) -> list[tuple[str, int, str]]:
    """(scope, limit, what) of the concurrency counts a session is part of."""
    policy = principal.policy
    scopes = [(f"key:{principal.key_id or 'dev'}", policy.max_concurrent_sessions, "key")]
    if principal.user_hash:
        scopes.append(
            (f"user:{principal.user_hash}", policy.max_concurrent_sessions_per_user, "user")
        )
    return [(scope, UNLIMITED if limit is None else limit, what) for scope, limit, what in scopes]


async def _take_leases(state: AppState, principal: Principal, lease_id: str) -> None:
    shared, taken = state.controls.shared, list[str]()
    for scope, limit, what in _lease_scopes(principal):
        if not await shared.acquire(scope, limit, lease_id):
            for done in taken:
                await shared.release(done, lease_id)
            raise too_many(
                "concurrent_sessions_exceeded",
                f"This {what} already has {limit} concurrent session(s), the most its policy "
                f"allows (max_concurrent_sessions{'_per_user' if what == 'user' else ''}); "
                "close one and try again.",
            )
        taken.append(scope)


async def _release_leases(state: AppState, principal: Principal, lease_id: str) -> None:
    for scope, _, _ in _lease_scopes(principal):
        await state.controls.shared.release(scope, lease_id)


async def _finalize(state: AppState, session: Session) -> None:
    """Give back the leases and record how the session ended."""
    principal = session.principal
    if principal is None:
        return
    await _release_leases(state, principal, session.id)
    if session.ended is not None:
        state.controls.audit(
            "session_end",
            principal,
            code=session.ended.error_code,
            session_id=session.id,
            reason=session.ended.reason,
        )
