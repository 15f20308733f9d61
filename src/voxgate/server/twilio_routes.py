"""Phone calls from Twilio (docs/telephony.md): ``POST /v1/twilio/voice``, the voice webhook,
answers with TwiML that connects the call to ``/v1/twilio/media``, a bidirectional Media
Stream that runs as a session.

The webhook is checked with ``X-Twilio-Signature`` against ``[twilio] auth_token``; its
approval reaches the media WebSocket as a signed token valid for one call and a short time
(`transports/twilio_auth.py`), and for one stream: its use is claimed in the shared state, so
a replayed token is refused by every replica. The call is admitted like any session, under
the policy of the API key ``[twilio] key`` names, with 8 kHz μ-law in and out so phone audio
is never resampled through 24 kHz. Its call id is the Twilio CallSid: a sideband client
attaches with ``GET /v1/realtime?call_id=CA…``.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit
from xml.etree import ElementTree

from fastapi import APIRouter, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from ..audio import PCMU
from ..session.clock import SystemClock
from ..session.transport import TransportClosed
from ..settings import TwilioSetting
from ..transports.headless import HeadlessTransport
from ..transports.twilio import TwilioCall
from ..transports.twilio_auth import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    TOKEN_PARAMETER,
    media_token_problem,
    mint_media_token,
    signature_matches,
)
from ..transports.twilio_messages import TwilioProtocolError
from . import replicas
from .admission import admit
from .auth import require_scope
from .calls import http_error
from .phone_media import phone_session
from .refusal import Refused
from .state import AppState

log = logging.getLogger(__name__)
router = APIRouter()
VOICE_PATH = "/v1/twilio/voice"
MEDIA_PATH = "/v1/twilio/media"
MAX_WEBHOOK_BYTES = 64 * 1024
# Close codes of a refused media stream (Twilio logs them in its debugger).
CLOSE_REFUSED = 1008
CLOSE_BUSY = 1013


def _state(scope: Request | WebSocket) -> AppState:
    state: AppState = scope.app.state.voxgate
    return state


def _not_configured() -> JSONResponse:
    return http_error(
        404,
        "Twilio calls are not configured on this server: set [twilio] auth_token (or "
        "VOXGATE_TWILIO_AUTH_TOKEN) to the account's auth token.",
        "twilio_not_configured",
    )


def public_url(request: Request, setting: TwilioSetting) -> str:
    """The URL Twilio requested, as it signed it: ``[twilio] public_url`` with the path and
    query, else the request's own, through a proxy's X-Forwarded-Proto/-Host if any."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if setting.public_url:
        return setting.public_url + path
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
    host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    return f"{proto or request.url.scheme}://{host or request.url.netloc}{path}"


def stream_url(webhook_url: str) -> str:
    """The media WebSocket's URL beside the webhook's (wss:// for https://)."""
    parts = urlsplit(webhook_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{MEDIA_PATH}"


def twiml(url: str, token: str) -> str:
    """``<Connect><Stream>``: a bidirectional Media Stream carrying the media token."""
    response = ElementTree.Element("Response")
    connect = ElementTree.SubElement(response, "Connect")
    stream = ElementTree.SubElement(connect, "Stream", url=url)
    ElementTree.SubElement(stream, "Parameter", name=TOKEN_PARAMETER, value=token)
    body = ElementTree.tostring(response, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'


@router.post(VOICE_PATH)
async def voice(request: Request) -> Response:
    state = _state(request)
    setting = state.settings.twilio
    if not setting.auth_token:
        return _not_configured()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return http_error(
            415,
            "Twilio's voice webhook is a form (application/x-www-form-urlencoded) POST.",
            "unsupported_content_type",
        )
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return http_error(413, f"The webhook body is over {MAX_WEBHOOK_BYTES} bytes.", "too_large")
    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    url = public_url(request, setting)
    if refused := _signature_refusal(request, setting.auth_token, url, params):
        state.controls.audit("twilio_webhook", code=refused.code, url=url)
        log.warning("refused a Twilio webhook for %s: %s", url, refused.message)
        return refused.response()
    call_sid = dict(params).get("CallSid", "")
    if not call_sid:
        return http_error(
            400, "The webhook has no CallSid parameter.", "missing_required_parameter", "CallSid"
        )
    try:  # the key's policy governs the call: refuse here, where Twilio's debugger shows it
        who = await state.controls.auth.authenticate(setting.key, None, use=False)
        require_scope(who.principal, "realtime")
        if who.principal.client_secret_id is not None:
            raise Refused(
                "invalid_twilio_key",
                "[twilio] key is a client secret, which admits one session only; name an API "
                "key with the realtime scope.",
                500,
                type_="server_error",
            )
    except Refused as exc:
        log.error("Twilio call %s refused: [twilio] key: %s", call_sid, exc.message)
        return exc.response()
    expires_at = int(state.controls.clock() + setting.media_token_ttl_s)
    token = mint_media_token(setting.auth_token, call_sid, expires_at)
    log.info("Twilio call %s: connecting its media stream", call_sid)
    return Response(twiml(stream_url(url), token), media_type="text/xml")


def _signature_refusal(
    request: Request, auth_token: str, url: str, params: list[tuple[str, str]]
) -> Refused | None:
    if request.headers.get(SIGNATURE_SETTINGS_HEADER):
        return Refused(
            "invalid_twilio_signature",
            "This webhook is signed with a webhook rule's shared key; voxgate checks "
            "signatures made with the account's auth token ([twilio] auth_token) only.",
            403,
        )
    if not signature_matches(auth_token, request.headers.get(SIGNATURE_HEADER), url, params):
        return Refused(
            "invalid_twilio_signature",
            f"X-Twilio-Signature is missing or does not match this request to {url}: check "
            "[twilio] auth_token and, behind a proxy, [twilio] public_url (the base URL "
            "Twilio calls).",
            403,
        )
    return None


@router.websocket(MEDIA_PATH)
async def media(ws: WebSocket) -> None:
    state = _state(ws)
    setting = state.settings.twilio
    await ws.accept()
    if not setting.auth_token:
        await ws.close(CLOSE_REFUSED, "twilio_not_configured")
        return
    clock = SystemClock()
    call = TwilioCall(ws, clock, send_timeout_s=state.settings.send_timeout_s)
    try:
        start = await call.handshake()
    except TransportClosed:
        return  # gone before it said who it was
    except TwilioProtocolError as exc:
        log.warning("refused a Twilio media stream: %s", exc)
        await call.close(CLOSE_REFUSED, "bad_media_stream")
        return
    token = start.custom_parameters.get(TOKEN_PARAMETER)
    now = state.controls.clock()
    problem = media_token_problem(setting.auth_token, token, start.call_sid, now)
    if problem is None and not await _first_use(state, token or "", now):
        problem = f"the '{TOKEN_PARAMETER}' parameter was used already"
    if problem is not None:
        state.controls.audit("twilio_media", code="invalid_media_token", call_sid=start.call_sid)
        log.warning("refused the media stream of Twilio call %s: %s", start.call_sid, problem)
        await call.close(CLOSE_REFUSED, "invalid_media_token")
        return
    await _serve(state, setting, call)


async def _serve(state: AppState, setting: TwilioSetting, call: TwilioCall) -> None:
    assert call.playout is not None
    transport = HeadlessTransport()
    try:
        session = await admit(
            state,
            credential=setting.key,
            safety_identifier=None,
            transport=transport,
            model=None,
            session_patch=phone_session(PCMU.type, setting.session),
            playout=call.playout,
            kind="twilio",
        )
    except Refused as exc:
        log.warning("Twilio call %s not admitted: %s", call.call_sid, exc.message)
        code = CLOSE_BUSY if exc.status in (429, 503) else CLOSE_REFUSED
        await call.close(code, exc.code)
        return
    call.microphone = lambda audio: session.track_audio(audio, PCMU)
    call.on_dtmf = session.dtmf
    call.on_gone = lambda why: session.end("hangup", message=why)
    call_id = call.call_sid
    try:
        await state.shared.register_call(call_id, state.advertise_url, replicas.CALL_TTL_S)
    except BaseException:
        await state.manager.release(session)
        await call.close(1011, "server_error")
        raise

    async def close() -> None:
        await replicas.forget_call(state.shared, call_id)
        await transport.close()
        await call.close(1000, "session ended")

    state.manager.serve_call(call_id, session, close)
    log.info("Twilio call %s started session %s", call_id, session.id)
    await call.run()
    await call.wait_closed()


async def _first_use(state: AppState, token: str, now: float) -> bool:
    """Whether this (valid, unexpired) media token has not admitted a stream before, on any
    replica: the claim lives in the shared state until the token expires."""
    expires_at = float(token.partition(".")[0])
    return await state.shared.claim(f"twilio-media:{token}", max(expires_at - now, 1.0))
