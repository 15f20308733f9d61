"""SIP digest authentication (RFC 3261 §22, RFC 2617 MD5, ``qop=auth`` or none): the challenge a
trunk with credentials sends callers, the check of their answer, and our answer to a
provider's challenge on outbound calls. Nonces are stateless: a timestamp signed with a
per-process key, good for ``NONCE_TTL_S``."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

NONCE_TTL_S = 300
_KEY = secrets.token_bytes(32)
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def new_nonce(now: float | None = None) -> str:
    stamp = str(int(time.time() if now is None else now))
    return f"{stamp}.{hmac.new(_KEY, stamp.encode(), hashlib.sha256).hexdigest()[:24]}"


def _nonce_fresh(nonce: str, now: float) -> bool:
    stamp, _, mac = nonce.partition(".")
    good = hmac.new(_KEY, stamp.encode(), hashlib.sha256).hexdigest()[:24]
    return stamp.isdigit() and hmac.compare_digest(mac, good) and now - int(stamp) < NONCE_TTL_S


def challenge(realm: str, now: float | None = None) -> str:
    """A ``WWW-Authenticate`` value."""
    return f'Digest realm="{realm}", nonce="{new_nonce(now)}", algorithm=MD5, qop="auth"'


def params(header: str) -> dict[str, str]:
    """The parameters of a ``Digest …`` header value."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}


def response(fields: dict[str, str], method: str, username: str, password: str, uri: str) -> str:
    ha1 = _md5(f"{username}:{fields.get('realm', '')}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if fields.get("qop") == "auth":
        nc, cnonce = fields.get("nc", ""), fields.get("cnonce", "")
        return _md5(f"{ha1}:{fields.get('nonce', '')}:{nc}:{cnonce}:auth:{ha2}")
    return _md5(f"{ha1}:{fields.get('nonce', '')}:{ha2}")


def verify(
    authorization: str | None,
    method: str,
    username: str,
    password: str,
    realm: str,
    now: float | None = None,
) -> bool:
    """Whether an ``Authorization`` value answers our challenge with these credentials."""
    if authorization is None:
        return False
    fields = params(authorization)
    at = time.time() if now is None else now
    if fields.get("username") != username or fields.get("realm") != realm:
        return False
    if not _nonce_fresh(fields.get("nonce", ""), at):
        return False
    expected = response(fields, method, username, password, fields.get("uri", ""))
    return hmac.compare_digest(expected, fields.get("response", ""))


def answer(challenge_value: str, method: str, uri: str, username: str, password: str) -> str:
    """An ``Authorization`` value answering a provider's ``WWW-Authenticate`` (or
    ``Proxy-Authenticate``) challenge."""
    fields = params(challenge_value)
    qop = "auth" if "auth" in fields.get("qop", "").split(",") else None
    mine = {"realm": fields.get("realm", ""), "nonce": fields.get("nonce", "")}
    if qop is not None:
        mine.update(qop="auth", nc="00000001", cnonce=secrets.token_hex(8))
    digest = response(mine, method, username, password, uri)
    parts = [
        f'username="{username}"',
        f'realm="{mine["realm"]}"',
        f'nonce="{mine["nonce"]}"',
        f'uri="{uri}"',
        f'response="{digest}"',
        "algorithm=MD5",
    ]
    if qop is not None:
        parts += [f'qop=auth, nc={mine["nc"]}, cnonce="{mine["cnonce"]}"']
    if "opaque" in fields:
        parts.append(f'opaque="{fields["opaque"]}"')
    return "Digest " + ", ".join(parts)
