"""``POST /v1/realtime/client_secrets``: mint a client secret in the hosted API's shape.

The secret is bound to the minting key (identity and policy), to the end user named by the
``OpenAI-Safety-Identifier`` header, to the session fields given here, and to a number of
sessions (policy ``client_secret_uses``). Its id comes back in ``X-Voxgate-Client-Secret-Id``
(for revocation); the value is stored only as a hash.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from ..control.guard import PolicyGuard, first_allowed_voice
from ..control.identity import Principal
from ..control.secrets import DEFAULT_USES, ClientSecret, MintError, generate_secret, ttl_of
from ..engines import tokens
from ..engines.upstream.calls import CallFailed
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..protocol.ids import new_id
from . import direct
from .auth import require_scope
from .identity import identity
from .refusal import Refused, too_many
from .state import AppState

SECRET_ID_HEADER = "X-Voxgate-Client-Secret-Id"
_FIELDS = {"expires_after", "session"}


async def create_client_secret(state: AppState, request: Request) -> Response:
    controls = state.controls
    credential, safety_identifier = identity(request)
    principal: Principal | None = None
    try:
        who = await controls.auth.authenticate(credential, safety_identifier, use=False)
        principal = who.principal
        require_scope(principal, "client_secrets")
        body = await _body(request)
        ttl = ttl_of(body.get("expires_after"), principal.policy.client_secret_max_ttl_seconds)
        patch, wire = _session(state, principal, body.get("session"))
        await _rate_limit(state, principal)
    except Refused as exc:
        controls.audit("client_secret_mint", principal, code=exc.code)
        return exc.response()
    except MintError as exc:
        return Refused(exc.code, exc.message, 400, param=exc.param).response()
    model = str(wire.get("model") or state.settings.default_model)
    if (upstream := direct.direct_upstream(state, model)) is not None:
        voice = ((wire.get("audio") or {}).get("output") or {}).get("voice")
        try:
            minted, secret_id = await direct.mint_direct_secret(
                state, upstream, principal, safety_identifier, patch, ttl, voice, model
            )
        except CallFailed as exc:
            return direct.refused(exc)
        return JSONResponse(minted, headers={SECRET_ID_HEADER: secret_id})
    now = controls.clock()
    new = generate_secret()
    secret = ClientSecret(
        id=new.id,
        key_id=principal.key_id,
        tenant=principal.tenant,
        user_hash=principal.user_hash,
        session=wire,
        bound=patch,
        policy=principal.policy.to_json(),
        created_at=now,
        expires_at=now + ttl,
        max_uses=principal.policy.client_secret_uses or DEFAULT_USES,
    )
    await controls.secret_writer.insert(secret, new.hash)
    controls.audit(
        "client_secret_mint",
        principal,
        client_secret_id=secret.id,
        expires_at=int(secret.expires_at),
        uses=secret.max_uses,
    )
    wire["expires_at"] = int(secret.expires_at)
    return JSONResponse(
        {"value": new.value, "expires_at": int(secret.expires_at), "session": wire},
        headers={SECRET_ID_HEADER: secret.id},
    )


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Refused("invalid_json", f"The body is not valid JSON: {exc}", 400) from None
    if not isinstance(body, dict):
        raise Refused("invalid_type", "The body must be a JSON object.", 400)
    extra = sorted(set(body) - _FIELDS)
    if extra:
        raise Refused("unknown_parameter", f"Unknown parameter: '{extra[0]}'.", 400, param=extra[0])
    return body


def _session(
    state: AppState, principal: Principal, session: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The session fields to bind (as given) and the effective session, validated like
    ``session.update`` and within the minting key's policy."""
    patch = {"type": "realtime"} if session is None else session
    if not isinstance(patch, dict):
        raise Refused("invalid_type", "'session' must be an object.", 400, param="session")
    connection = RealtimeConnection(
        model=state.settings.default_model,
        count_tokens=tokens.count_tokens,
        instructions=state.settings.instructions,
        prompts=state.prompts,
        transcription_logprobs=state.transcription_logprobs,
        limits=state.connection_limits,
    )
    guard = PolicyGuard(principal.policy)
    try:
        connection.configure(patch)
        # A voice asked for is checked as given; none asked for: an allowed one.
        voice = first_allowed_voice(connection.config, principal.policy)
        if voice is not None and "voice" not in ((patch.get("audio") or {}).get("output") or {}):
            connection.configure(voice)
        guard.check_config(connection.config)
    except ProtocolError as exc:
        status = 403 if (exc.code or "").endswith("_not_allowed") else 400
        param = f"session.{exc.param.removeprefix('session.')}" if exc.param else "session"
        raise Refused(exc.code or "invalid_value", exc.message, status, param=param) from None
    bound = {k: v for k, v in patch.items() if k not in ("id", "object", "expires_at")}
    effective = connection.transcription or connection.config
    return bound, effective.to_wire(session_id=new_id("sess"), expires_at=0)


async def _rate_limit(state: AppState, principal: Principal) -> None:
    """At most ``client_secrets_per_minute`` per key, in fixed one-minute windows shared
    by every replica."""
    limit = principal.policy.client_secrets_per_minute
    if limit is None:
        return
    minute = int(state.controls.clock() // 60)
    counter = f"mint:{principal.key_id or 'dev'}:{minute}"
    if await state.controls.shared.add(counter, 1, 60.0) > limit:
        raise too_many(
            "rate_limit_exceeded",
            f"This key may mint {limit} client secret(s) per minute "
            "(policy client_secrets_per_minute); try again in a minute.",
        )
