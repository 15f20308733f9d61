"""Phone calls over SIP: who may call (trunks), where a call goes (routes), and the life of
each call as a session — admitted like any other (`admission.admit(kind="sip")`), served with a
`HeadlessTransport` for events and an `RtpStream` as its microphone and playout, registered
by call id so that sidebands attach and ``/hangup`` works as for WebRTC calls.

Inbound: a trunk's ``allowed_sources`` must hold the caller's address (else 403); the called
number picks a route (else 404); a route's ``session`` answers at once, its ``webhook`` posts
``realtime.call.incoming`` and waits for ``/accept`` or ``/reject`` (480 after
``accept_timeout_s``). Outbound calls (`place`) go through a trunk's ``outbound_uri``,
offering PCMU and PCMA (and telephone-event), and become the same kind of session once
answered, in the codec the answer chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..session.session import Session
from ..settings import SipRoute, SipSettings, SipTrunk
from ..transports.headless import HeadlessTransport
from ..transports.rtp import Codec, RtpStream
from ..transports.sip import digest, sdp
from ..transports.sip.endpoint import SipEndpoint
from ..transports.sip.events import (
    Call,
    CallAnswered,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    MediaChanged,
    Output,
    RequestDone,
    Send,
)
from ..transports.sip.message import host_port_of, reason_for, user_of
from ..transports.webrtc import new_call_id
from . import replicas, sip_webhook
from .admission import admit
from .phone_media import phone_session
from .refusal import Refused
from .sip_goodbye import needs_goodbye, say_goodbye
from .state import AppState

log = logging.getLogger(__name__)
DTMF_PT = sdp.DEFAULT_DTMF_PT
REALM = "voxgate"
# What an outbound call offers, in order of preference; the callee's answer picks one.
OUTBOUND_CODECS = [("PCMU", 0), ("PCMA", 8)]
# SIP status for a refused admission: capacity and budgets are "busy", the rest "forbidden".
_REFUSED_STATUS = {429: 486, 503: 503, 401: 403, 403: 403}


@dataclass
class PhoneCall:
    """A SIP call and what serves it."""

    id: str
    sip: Call
    trunk: SipTrunk
    media: sdp.MediaOffer | None = None
    route: SipRoute | None = None
    rtp: RtpStream | None = None
    session: Session | None = None
    accept_timer: asyncio.TimerHandle | None = None
    # Outbound: ringing, answered, busy, no_answer, failed … in the order they happened.
    progress: list[str] = field(default_factory=list)
    outcome: asyncio.Future[str] | None = None
    sip_status: int | None = None
    # Set when an accept begins, so that a second accept racing it finds no pending call.
    accepting: bool = False


class SipService:
    def __init__(self, state: AppState, settings: SipSettings) -> None:
        self.state = state
        self.settings = settings
        self.calls: dict[str, PhoneCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.endpoint: SipEndpoint | None = None
        assert settings.listen is not None
        host, _, port = settings.listen.rpartition(":")
        self.bind_host, self.bind_port = host.strip("[]"), int(port)
        self.public_host = settings.public_host or _reachable(self.bind_host)

    @property
    def port(self) -> int:
        """The SIP port listened on (the one chosen, when ``listen`` asked for port 0)."""
        assert self.endpoint is not None
        return self.endpoint.port

    async def start(self) -> None:
        self.endpoint = await SipEndpoint.open(
            self.bind_host, self.bind_port, self.public_host, self._on_event
        )
        log.info("SIP endpoint listening on %s:%d (UDP)", self.bind_host, self.endpoint.port)

    async def aclose(self) -> None:
        for call in list(self.calls.values()):
            if call.session is None:
                self._reject(call, 503)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.endpoint is not None:
            self.endpoint.close()

    # -- who may call, and where it goes ---------------------------------------------------

    def trunk_for(self, source_ip: str) -> SipTrunk | None:
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return None
        for trunk in self.settings.trunks:
            for cidr in trunk.allowed_sources:
                if address in ipaddress.ip_network(cidr, strict=False):
                    return trunk
        return None

    def route_for(self, number: str) -> SipRoute | None:
        return next((r for r in self.settings.routes if r.number == number), None)

    def trunk_named(self, name: str) -> SipTrunk | None:
        return next((t for t in self.settings.trunks if t.name == name), None)

    # -- events from the user agent --------------------------------------------------------

    def _on_event(self, out: Output) -> None:
        if isinstance(out, Send):  # the endpoint sends these itself
            return
        phone = out.call.context.get("phone")
        match out:
            case IncomingCall(call=call, source=source):
                self._spawn(self._incoming(call, source), f"sip:{call.id}")
            case CallEnded(reason=reason) if isinstance(phone, PhoneCall):
                self._ended(phone, reason)
            case MediaChanged(media=media) if isinstance(phone, PhoneCall):
                if phone.rtp is not None:
                    phone.rtp.set_remote((media.host, media.port))
                    phone.rtp.hold(media.on_hold)
            case CallProgress(status=status) if isinstance(phone, PhoneCall):
                if status in (180, 183) and "ringing" not in phone.progress:
                    phone.progress.append("ringing")
            case CallAnswered(media=media) if isinstance(phone, PhoneCall):
                phone.media = media
                self._spawn(self._outbound_answered(phone), f"sip:{phone.id}:answered")
            case CallFailed(status=status) if isinstance(phone, PhoneCall):
                self._outbound_failed(phone, status)
            case RequestDone(method=method, status=status):
                log.info("SIP %s on call %s: %d", method, out.call.id, status)
            case _:  # confirmations, and events of calls no longer followed
                pass

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _incoming(self, call: Call, source: tuple[str, int]) -> None:
        assert self.endpoint is not None
        trunk = self.trunk_for(source[0])
        if trunk is None:
            log.info("SIP call from %s refused: no trunk allows this address", source[0])
            self.state.controls.audit("sip_call", None, code="source_not_allowed", source=source[0])
            self.endpoint.reject(call, 403, "Forbidden (source not allowed)")
            return
        if not self._authenticated(trunk, call):
            return
        number = user_of(call.invite.uri) or user_of(call.invite.headers.get("to") or "")
        route = self.route_for(number)
        if route is None:
            self.endpoint.reject(call, 404, "Not Found (no route for this number)")
            return
        try:
            media = sdp.parse(call.invite.body)
        except sdp.SdpError as exc:
            self.endpoint.reject(call, 488, f"Not Acceptable Here ({exc})"[:80])
            return
        phone = PhoneCall(new_call_id(), call, trunk, media, route)
        call.context["phone"] = phone
        self.calls[phone.id] = phone
        self.endpoint.ring(call)
        if route.webhook is not None:
            # In the directory before the webhook goes out: the operator's accept, reject or
            # hangup may reach any replica, which forwards it here.
            await self.state.shared.register_call(
                phone.id, self.state.advertise_url, replicas.CALL_TTL_S
            )
            await self._notify(phone, route.webhook)
            return
        with contextlib.suppress(Refused):  # refused: answered with a SIP status already
            await self.accept(phone, route.session or {})

    def _authenticated(self, trunk: SipTrunk, call: Call) -> bool:
        """A trunk with credentials challenges callers (401) until they answer with them."""
        assert self.endpoint is not None
        if trunk.username is None or trunk.password is None:
            return True
        answer = call.invite.headers.get("authorization")
        if digest.verify(answer, "INVITE", trunk.username, trunk.password, REALM):
            return True
        if answer is not None:
            self.state.controls.audit("sip_call", None, code="bad_credentials", trunk=trunk.name)
        challenge = (("WWW-Authenticate", digest.challenge(REALM)),)
        self.endpoint.reject(call, 401, "Unauthorized", challenge)
        return False

    async def _notify(self, phone: PhoneCall, url: str) -> None:
        secret = self.settings.webhook_secret or ""
        event = sip_webhook.incoming_event(phone.id, phone.sip.invite.headers.items, time.time())
        loop = asyncio.get_running_loop()
        phone.accept_timer = loop.call_later(
            self.settings.accept_timeout_s, lambda: self._reject(phone, 480)
        )
        if (problem := await sip_webhook.deliver(url, secret, event)) is not None:
            log.warning("call %s: %s", phone.id, problem)
            self._reject(phone, 480)

    def pending(self, call_id: str) -> PhoneCall | None:
        phone = self.calls.get(call_id)
        if phone is None or phone.accepting or phone.sip.state != "proceeding":
            return None
        return phone

    def _reject(self, phone: PhoneCall, status: int, reason: str = "") -> None:
        if self.endpoint is not None and phone.sip.state == "proceeding":
            self.endpoint.reject(phone.sip, status, reason)
        self._forget(phone)

    def reject(self, phone: PhoneCall, status: int) -> None:
        self._reject(phone, status)

    def refer(self, phone: PhoneCall, target_uri: str) -> None:
        assert self.endpoint is not None
        self.endpoint.refer(phone.sip, target_uri)

    def _forget(self, phone: PhoneCall) -> None:
        if phone.accept_timer is not None:
            phone.accept_timer.cancel()
            phone.accept_timer = None
        if phone.session is None and self.calls.pop(phone.id, None) is not None:
            # A call that never became a session leaves the directory here (a session's call
            # leaves it when the session closes).
            self._spawn(replicas.forget_call(self.state.shared, phone.id), f"sip:{phone.id}:gone")

    def _ended(self, phone: PhoneCall, reason: str) -> None:
        self._forget(phone)
        if phone.session is not None:
            phone.session.end("hangup" if reason != "no_ack" else "call_failed")
        if phone.outcome is not None and not phone.outcome.done():
            phone.outcome.set_result("failed")

    # -- a call becomes a session ----------------------------------------------------------

    async def accept(self, phone: PhoneCall, config: dict[str, Any]) -> Session:
        """Admit the call's session and answer 200 OK with the SDP answer; raises Refused
        (after answering the call with the matching SIP status)."""
        assert self.endpoint is not None and phone.media is not None
        phone.accepting = True
        if phone.accept_timer is not None:
            phone.accept_timer.cancel()
        transport = HeadlessTransport()
        try:
            rtp = await self._open_rtp(phone.media)
        except OSError as exc:  # every port of the range is taken
            log.warning("SIP call %s refused: %s", phone.id, exc)
            self._reject(phone, 503, "Service Unavailable (no free RTP port)")
            raise Refused("rtp_ports_exhausted", str(exc), 503, type_="server_error") from None
        try:
            session = await self._admit(phone, transport, rtp, config)
        except Refused as exc:
            await rtp.close()
            log.info("SIP call %s refused: %s (%s)", phone.id, exc.message, exc.code)
            status = _REFUSED_STATUS.get(exc.status, 403)
            self._reject(phone, status, f"{reason_for(status)} ({exc.code})")
            raise
        if phone.sip.state != "proceeding":  # cancelled while it was being admitted
            await self.state.manager.release(session)
            await rtp.close()
            self._forget(phone)
            return session
        rtp.set_remote((phone.media.host, phone.media.port))
        body = sdp.answer(
            phone.media,
            host=self.public_host,
            port=rtp.local_port,
            session_id=int(time.time()),
            version=1,
        )
        await self._serve(phone, session, rtp, transport)
        self.endpoint.answer(phone.sip, body, (self.public_host, rtp.local_port))
        return session

    async def _open_rtp(self, media: sdp.MediaOffer) -> RtpStream:
        codec: Codec = "PCMA" if media.codec == "PCMA" else "PCMU"
        return await RtpStream.open(
            self.bind_host,
            self.settings.port_range,
            codec,
            media.payload_type,
            media.dtmf_payload_type,
        )

    async def _admit(
        self,
        phone: PhoneCall,
        transport: HeadlessTransport,
        rtp: RtpStream,
        patch: dict[str, Any],
    ) -> Session:
        return await admit(
            self.state,
            credential=phone.trunk.key,
            safety_identifier=None,
            transport=transport,
            model=patch.get("model"),
            session_patch=phone_session(rtp.format.type, patch),
            playout=rtp,
            kind="sip",
        )

    async def _serve(
        self, phone: PhoneCall, session: Session, rtp: RtpStream, transport: HeadlessTransport
    ) -> None:
        """Wire the media to the session and serve it; when it ends, BYE and close."""
        phone.session, phone.rtp = session, rtp
        fmt = rtp.format
        rtp.on_audio = lambda audio: session.track_audio(audio, fmt)
        rtp.on_dtmf = session.dtmf
        await self.state.shared.register_call(
            phone.id, self.state.advertise_url, replicas.CALL_TTL_S
        )

        async def close() -> None:
            self.calls.pop(phone.id, None)
            await replicas.forget_call(self.state.shared, phone.id)
            if needs_goodbye(session) and phone.sip.state == "confirmed":
                await say_goodbye(self.state.engines, session, rtp)
            if self.endpoint is not None:
                self.endpoint.hangup(phone.sip)
            await transport.close()
            await rtp.close()

        self.state.manager.serve_call(phone.id, session, close)
        log.info("SIP call %s started session %s", phone.id, session.id)

    # -- outbound --------------------------------------------------------------------------

    async def place(
        self,
        *,
        trunk: SipTrunk,
        to: str,
        from_: str,
        session_config: dict[str, Any],
        credential: str | None,
        safety_identifier: str | None,
        timeout_s: float,
    ) -> PhoneCall:
        """Call ``to`` through ``trunk``; returns when it is answered or has failed (see
        ``PhoneCall.progress``). Raises Refused when the session cannot be admitted."""
        assert self.endpoint is not None and trunk.outbound_uri is not None
        codec = sdp.MediaOffer("", 0, "PCMU", 0, DTMF_PT, "sendrecv")
        try:
            rtp = await self._open_rtp(codec)
        except OSError as exc:
            raise Refused("rtp_ports_exhausted", str(exc), 503, type_="server_error") from None
        transport = HeadlessTransport()
        try:
            session = await admit(
                self.state,
                credential=credential,
                safety_identifier=safety_identifier,
                transport=transport,
                model=session_config.get("model"),
                session_patch=phone_session(rtp.format.type, session_config),
                playout=rtp,
                kind="sip",
            )
        except Refused:
            await rtp.close()
            raise
        host, port = host_port_of(trunk.outbound_uri)
        body = sdp.build(
            host=self.public_host,
            port=rtp.local_port,
            session_id=int(time.time()),
            version=1,
            codecs=OUTBOUND_CODECS,
            dtmf_payload_type=DTMF_PT,
        )
        target = f"sip:{to}@{host}:{port}"
        call = self.endpoint.invite(
            to_uri=target,
            from_uri=f"sip:{from_}@{self.public_host}",
            target=(await _resolve(host), port),
            body=body,
            local_media=(self.public_host, rtp.local_port),
            credentials=_credentials(trunk),
        )
        phone = PhoneCall(new_call_id(), call, trunk, rtp=rtp, session=session)
        phone.outcome = asyncio.get_running_loop().create_future()
        call.context.update(phone=phone, transport=transport)
        self.calls[phone.id] = phone
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(phone.outcome)
        except TimeoutError:
            self.endpoint.hangup(call)  # CANCEL
            self._outbound_done(phone, "no_answer", 487)
        if phone.outcome.result() != "answered":
            await self.state.manager.release(session)
            await rtp.close()
        return phone

    async def _outbound_answered(self, phone: PhoneCall) -> None:
        assert phone.rtp is not None and phone.session is not None and phone.media is not None
        if phone.outcome is None or phone.outcome.done():
            return
        media = phone.media
        codec: Codec = "PCMA" if media.codec == "PCMA" else "PCMU"
        phone.rtp.use_codec(codec, media.payload_type, media.dtmf_payload_type)
        phone.rtp.set_remote((media.host, media.port))
        transport = phone.sip.context["transport"]
        assert isinstance(transport, HeadlessTransport)
        await self._serve(phone, phone.session, phone.rtp, transport)
        self._outbound_done(phone, "answered", 200)

    def _outbound_failed(self, phone: PhoneCall, status: int) -> None:
        if status in (486, 600):
            outcome = "busy"
        elif status in (408, 480, 487):
            outcome = "no_answer"
        else:
            outcome = "failed"
        self._outbound_done(phone, outcome, status)

    def _outbound_done(self, phone: PhoneCall, outcome: str, status: int) -> None:
        if phone.outcome is None or phone.outcome.done():
            return
        phone.progress.append(outcome)
        phone.sip_status = status
        if outcome != "answered":
            self.calls.pop(phone.id, None)
        phone.outcome.set_result(outcome)


async def start_sip(state: AppState, settings: SipSettings) -> SipService:
    service = SipService(state, settings)
    await service.start()
    return service


def _reachable(host: str) -> str:
    """An address peers can send to: the listen host, or for a wildcard this machine's."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:  # no packet is sent: connect() on UDP only picks the outgoing interface
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _credentials(trunk: SipTrunk) -> tuple[str, str] | None:
    if trunk.username is None or trunk.password is None:
        return None
    return trunk.username, trunk.password


async def _resolve(host: str) -> str:
    """The trunk host's IPv4 address (resolved off the event loop's thread)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
        return str(infos[0][4][0])
    except (OSError, IndexError):
        return host
