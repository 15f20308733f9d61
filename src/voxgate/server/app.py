"""The FastAPI application: routes, lifespan, and the wiring of settings into parts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..engines import tokens
from ..protocol import events as ev
from ..protocol.errors import ProtocolError
from ..session.engines import EngineSet
from ..session.manager import SessionManager
from ..settings import Settings
from ..transports.websocket import WebSocketTransport, read_handshake
from . import (
    admin,
    calls,
    http_errors,
    ledger_routes,
    recording_routes,
    redact,
    replicas,
    sip_routes,
    twilio_routes,
)
from .admission import admit
from .auth import require_scope
from .calls import check_owner
from .client_secrets import SECRET_ID_HEADER, create_client_secret
from .controls import Controls
from .engines import start_engines
from .http_limits import BodyLimits
from .identity import identity
from .ledger import Ledger
from .memory import MemoryTrimmer
from .refusal import Refused
from .state import AppState
from .tools import server_tools

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# What browser pages send with the SDP offer (agents-js adds its own headers).
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-OpenAI-Agents-SDK",
    "OpenAI-Safety-Identifier",
    "OpenAI-Beta",
]


def create_app(settings: Settings, engines: EngineSet | None = None) -> FastAPI:
    """The server. ``engines`` overrides the ones the settings describe (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        trimmer = MemoryTrimmer()
        manager = SessionManager(max_sessions=settings.max_sessions, on_release=trimmer.schedule)
        shared = await replicas.open_shared_state(settings)
        try:
            controls = await Controls.start(settings, manager, shared)
        except BaseException:
            await shared.aclose()
            raise
        if await controls.auth.dev_mode():
            if not settings.loopback:
                await controls.aclose()
                raise RuntimeError(
                    f"refusing to listen on {settings.host} in development mode (no API key "
                    "of any kind); create a key with voxgate keys create or set VOXGATE_API_KEYS"
                )
            log.warning(
                "development mode: no API keys configured, any bearer token (or none) is "
                "accepted. Listening on loopback only. Create a key (voxgate keys create) or "
                "set VOXGATE_API_KEYS to require keys."
            )
        try:
            tools = server_tools(settings)
        except ValueError:
            await controls.aclose()
            raise
        state = AppState(
            settings,
            engines or await start_engines(settings),
            manager,
            controls,
            advertise_url=replicas.advertised_url(settings),
            tools=tools,
        )
        state.ledger = Ledger.start(settings, controls.engine)
        app.state.voxgate = state
        if settings.sip.listen is not None:
            from .sip_calls import start_sip  # the RTP and SIP stack only when SIP is on

            state.sip = await start_sip(state, settings.sip)
        # Load the tokenizer off the event loop, so no session's first count waits for it.
        log.info(tokens.describe(await asyncio.to_thread(tokens.load)))
        yield
        await state.manager.drain(settings.shutdown_timeout_s)
        await state.manager.wait_closed()
        if state.sip is not None:
            await state.sip.aclose()
        await state.ledger.aclose()
        await controls.aclose()
        if tools is not None:
            await tools.aclose()
        await trimmer.aclose()
        if engines is None:
            await state.engines.aclose()
        else:  # passed in: speech-to-text and VAD stay with the caller, who may share them
            await state.engines.llm.aclose()
            await state.engines.tts.aclose()

    app = FastAPI(title="voxgate", version="0.1.0", lifespan=lifespan)
    http_errors.install(app)
    redact.install()
    app.add_middleware(
        BodyLimits,
        max_body_bytes=int(settings.max_request_kb * 1024),
        route_limits={"/v1/realtime/calls": calls.MAX_CALL_BODY_BYTES},
        body_timeout_s=settings.http_body_timeout_s,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=CORS_HEADERS,
        expose_headers=["Location", SECRET_ID_HEADER],
    )
    app.include_router(admin.router)
    app.include_router(ledger_routes.router)
    app.include_router(sip_routes.router)
    app.include_router(recording_routes.router)
    app.include_router(twilio_routes.router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(WEB_DIR / "console.html", media_type="text/html")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        state: AppState = app.state.voxgate
        return JSONResponse({"status": "ok", "sessions": len(state.manager.sessions)})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics; with API keys configured, scrapers send one as a bearer."""
        state: AppState = app.state.voxgate
        try:  # any API key (not a client secret: those are handed to end users)
            who = await state.controls.auth.authenticate(*identity(request), use=False)
            if who.principal.client_secret_id is not None:
                raise Refused("insufficient_scope", "Metrics need an API key.", 403)
        except Refused as exc:
            return exc.response()
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/v1/realtime/calls")
    async def create_call(request: Request, model: str | None = None) -> Response:
        return await calls.create_call(app.state.voxgate, request, model)

    @app.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> Response:
        return await create_client_secret(app.state.voxgate, request)

    @app.post("/v1/realtime/calls/{call_id}/hangup")
    async def hangup(request: Request, call_id: str) -> Response:
        return await calls.hangup(app.state.voxgate, request, call_id)

    @app.websocket("/v1/realtime")
    async def realtime(
        ws: WebSocket,
        model: str | None = None,
        call_id: str | None = None,
        intent: str | None = None,
    ) -> None:
        await serve_realtime(app.state.voxgate, ws, model, call_id, intent)

    return app


async def _refuse(ws: WebSocket, message: str, code: str, close_code: int) -> None:
    """Say why in an OpenAI-shaped error event, then close."""
    error = ev.Error(error=ProtocolError(message, code=code).to_error(None))
    await ws.send_text(error.to_json())
    await ws.close(close_code, code)


def _close_code(refused: Refused) -> int:
    # 1013 "try again later" for capacity, 1008 "policy violation" for everything else.
    return 1013 if refused.status in (429, 503) and refused.code != "rate_limit_exceeded" else 1008


async def serve_realtime(
    state: AppState,
    ws: WebSocket,
    model: str | None,
    call_id: str | None,
    intent: str | None = None,
) -> None:
    handshake = read_handshake(ws)
    await ws.accept(subprotocol=handshake.subprotocol)
    if handshake.beta:
        await _refuse(
            ws,
            "voxgate speaks the GA Realtime protocol; the beta shape (OpenAI-Beta: realtime=v1) "
            "is not supported. Remove the header and use the GA events.",
            "beta_api_shape_disabled",
            4000,
        )
        return
    if call_id is None and intent not in (None, "transcription"):
        message = f"Invalid value: {intent!r} for 'intent'. Supported values are: 'transcription'."
        await _refuse(ws, message, "invalid_value", 1008)
        return
    safety_identifier = ws.headers.get("openai-safety-identifier")
    try:
        if call_id is not None:
            await _attach(state, ws, handshake.credential, safety_identifier, model, call_id)
            return
        session = await admit(
            state,
            credential=handshake.credential,
            safety_identifier=safety_identifier,
            transport=WebSocketTransport(ws, send_timeout_s=state.settings.send_timeout_s),
            model=model,
            intent=intent,
        )
    except Refused as exc:
        await _refuse(ws, exc.message, exc.code, _close_code(exc))
        return
    await state.manager.serve(session)


async def _attach(
    state: AppState,
    ws: WebSocket,
    credential: str | None,
    safety_identifier: str | None,
    model: str | None,
    call_id: str,
) -> None:
    """A sideband client joins a live call's session (the call's own key, a key of the same
    tenant, or an admin key)."""
    who = await state.controls.auth.authenticate(credential, safety_identifier, use=False)
    require_scope(who.principal, "realtime")
    if model is not None:
        message = "Pass either ?model= (new session) or ?call_id= (attach), not both."
        await _refuse(ws, message, "invalid_value", 1008)
        return
    session = state.manager.live_call(call_id)
    if session is None and not replicas.forwarded(ws):
        owner = await replicas.remote_owner(state.shared, state.advertise_url, call_id)
        if owner is not None:
            max_size = int(state.settings.max_message_mb * 1024 * 1024)
            failed = await replicas.proxy_attach(ws, owner, call_id, state.advertise_url, max_size)
            if failed is not None:
                await _refuse(ws, failed[1], failed[0], 1011)
            return
    if session is None:
        message = (
            f"No live call with id '{call_id}': ?call_id= attaches to a WebRTC call in "
            "progress (its id is the last segment of the Location header the call was "
            "created with)."
        )
        await _refuse(ws, message, "call_not_found", 1008)
        return
    check_owner(state, who.principal, session, "sideband_attach")
    log.info("sideband client attached to call %s", call_id)
    await session.attach(WebSocketTransport(ws, send_timeout_s=state.settings.send_timeout_s))
