"""Who may start a Twilio call, with no I/O.

- The voice webhook carries ``X-Twilio-Signature``: the base64 HMAC-SHA1, keyed with the
  account's auth token, of the URL Twilio requested (query string included) followed by every
  POST parameter, sorted by name, as name then value with no separators.
- The media WebSocket carries no credential of its own, so the webhook's approval travels to
  it as a short-lived token inside the TwiML (a ``<Parameter>`` of the ``<Stream>``, which
  Twilio hands back in the ``start`` message's ``customParameters``). The token is an
  HMAC-SHA256 over the call's SID and an expiry, keyed with a key derived from the auth
  token, so every replica that knows the auth token can check it and nobody else can mint it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

SIGNATURE_HEADER = "x-twilio-signature"
# Webhooks signed with a shared key instead of the auth token say so in this header.
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
TOKEN_PARAMETER = "voxgate_token"
_TOKEN_KEY_LABEL = b"voxgate twilio media token v1"
_DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


def request_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Twilio sends for a request to ``url`` with these POST parameters."""
    signed = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, and with its default port added or removed: proxies and Twilio
    disagree about whether ``:443`` is part of the URL that was signed."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    variants = [url]
    if default is not None and parts.port in (None, default):
        other = host if parts.port is not None else f"{host}:{default}"
        variants.append(urlunsplit(parts._replace(netloc=other)))
    return variants


def signature_matches(
    auth_token: str, signature: str | None, url: str, params: list[tuple[str, str]]
) -> bool:
    """Whether ``signature`` is Twilio's for this request (compared in constant time)."""
    if not signature or not auth_token:
        return False
    return any(
        hmac.compare_digest(request_signature(auth_token, candidate, params), signature)
        for candidate in url_variants(url)
    )


def _token_mac(auth_token: str, call_sid: str, expires_at: int) -> str:
    key = hmac.new(auth_token.encode(), _TOKEN_KEY_LABEL, hashlib.sha256).digest()
    mac = hmac.new(key, f"{call_sid}|{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def mint_media_token(auth_token: str, call_sid: str, expires_at: int) -> str:
    """A token that admits the media stream of ``call_sid`` until ``expires_at`` (Unix s)."""
    return f"{expires_at}.{_token_mac(auth_token, call_sid, expires_at)}"


def media_token_problem(
    auth_token: str, token: str | None, call_sid: str, now: float
) -> str | None:
    """Why ``token`` does not admit the media stream of ``call_sid`` at ``now``; None if it
    does."""
    if not token:
        return (
            f"the start message has no '{TOKEN_PARAMETER}' custom parameter: open the media "
            "stream with the TwiML that POST /v1/twilio/voice returns"
        )
    expiry, _, mac = token.partition(".")
    if not expiry.isdigit() or not mac:
        return f"the '{TOKEN_PARAMETER}' parameter is not a token this server issued"
    if not hmac.compare_digest(_token_mac(auth_token, call_sid, int(expiry)), mac):
        return f"the '{TOKEN_PARAMETER}' parameter was not issued for call {call_sid}"
    if now > int(expiry):
        return f"the '{TOKEN_PARAMETER}' parameter expired; the media stream came too late"
    return None
