"""The FastAPI application: routes, lifespan, and the wiring of settings into parts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from ..engines import tokens
from ..protocol import events as ev
from ..protocol.connection import RealtimeConnection
from ..protocol.errors import ProtocolError
from ..session.engines import EngineSet
from ..session.manager import AdmissionRefused, SessionManager
from ..session.session import Session, SessionLimits
from ..settings import Settings
from ..transports.websocket import WebSocketTransport, read_handshake
from .engines import start_engines

log = logging.getLogger(__name__)
AUDIO_LEAD_S = 1.0


@dataclass
class AppState:
    settings: Settings
    engines: EngineSet
    manager: SessionManager

    @property
    def limits(self) -> SessionLimits:
        s = self.settings
        return SessionLimits(
            max_duration_s=s.max_session_minutes * 60,
            idle_timeout_s=s.idle_timeout_s,
            audio_lead_s=AUDIO_LEAD_S,
        )

    def credential_ok(self, credential: str | None) -> bool:
        return self.settings.dev_mode or credential in self.settings.api_keys


def create_app(settings: Settings, engines: EngineSet | None = None) -> FastAPI:
    """The server. ``engines`` overrides the ones the settings describe (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState(
            settings,
            engines or await start_engines(settings),
            SessionManager(max_sessions=settings.max_sessions),
        )
        app.state.voxgate = state
        # Load the tokenizer off the event loop, so no session's first count waits for it.
        log.info("token counting: %s", await asyncio.to_thread(tokens.load))
        if settings.dev_mode:
            log.warning(
                "development mode: no API keys configured, any bearer token (or none) is "
                "accepted. Listening on loopback only. Set VOXGATE_API_KEYS to require keys."
            )
        yield
        await state.manager.drain(settings.shutdown_timeout_s)
        if engines is None:
            await state.engines.aclose()
        else:  # passed in: speech-to-text and VAD stay with the caller, who may share them
            await state.engines.llm.aclose()
            await state.engines.tts.aclose()

    app = FastAPI(title="voxgate", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        state: AppState = app.state.voxgate
        return JSONResponse({"status": "ok", "sessions": len(state.manager.sessions)})

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket, model: str | None = None, call_id: str | None = None) -> None:
        await serve_realtime(app.state.voxgate, ws, model, call_id)

    return app


async def _refuse(ws: WebSocket, message: str, code: str, close_code: int) -> None:
    """Say why in an OpenAI-shaped error event, then close."""
    error = ev.Error(error=ProtocolError(message, code=code).to_error(None))
    await ws.send_text(error.to_json())
    await ws.close(close_code, code)


async def serve_realtime(
    state: AppState, ws: WebSocket, model: str | None, call_id: str | None
) -> None:
    handshake = read_handshake(ws)
    if not state.credential_ok(handshake.credential):
        await ws.accept(subprotocol=handshake.subprotocol)
        await _refuse(ws, "Incorrect API key provided.", "invalid_api_key", 1008)
        return
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
    if call_id is not None:
        message = (
            "Attaching to a call with ?call_id= (sideband) is not available on this server yet."
            if model is None
            else "Pass either ?model= (new session) or ?call_id= (attach), not both."
        )
        await _refuse(ws, message, "invalid_value", 1008)
        return
    try:
        state.manager.admit()
    except AdmissionRefused as exc:
        await _refuse(ws, exc.message, exc.code, 1013)
        return
    connection = RealtimeConnection(
        model=model or state.settings.default_model,
        count_tokens=tokens.count_tokens,
        instructions=state.settings.instructions,
    )
    session = Session(connection, state.engines, WebSocketTransport(ws), limits=state.limits)
    await state.manager.serve(session)
