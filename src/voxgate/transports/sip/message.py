"""SIP messages (RFC 3261 §7, the subset docs/telephony.md lists): parse bytes into a request or
response, and write one back.

Tolerant where peers differ in harmless ways (compact header names, any case, folded lines,
LF-only line ends, a missing Content-Length over UDP), strict where a guess would be wrong: a
message without a start line, Via, From, To, Call-ID or a CSeq that matches its method is a
`SipParseError`, which the endpoint answers with 400 (when it can address a reply) and never
lets escape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 128
SIP_VERSION = "SIP/2.0"

# RFC 3261 §7.3.3 and the extensions' one-letter names.
_COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "o": "Event",
}
# The spelling written back, for the headers whose usual form is not plain title case.
_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
REQUIRED = ("via", "from", "to", "call-id", "cseq")


class SipParseError(ValueError):
    """The peer sent something that is not a SIP message we can act on."""


def canonical(name: str) -> str:
    lower = name.strip().lower()
    if lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower) or "-".join(p.capitalize() for p in lower.split("-"))


@dataclass
class Headers:
    """Ordered headers, looked up by any spelling of the name (compact forms included)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        want = canonical(name)
        for key, value in self.items:
            if key == want:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        want = canonical(name)
        return [value for key, value in self.items if key == want]

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        want = canonical(name)
        self.items = [(k, v) for k, v in self.items if k != want]

    def copy(self) -> Headers:
        return Headers(list(self.items))


@dataclass
class SipMessage:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.headers.get("cseq") or "").partition(" ")
        return int(number), method.strip().upper()

    @property
    def from_tag(self) -> str | None:
        return tag_of(self.headers.get("from") or "")

    @property
    def to_tag(self) -> str | None:
        return tag_of(self.headers.get("to") or "")

    @property
    def branch(self) -> str:
        via = (self.headers.get("via") or "").split(",")[0]
        return param_of(via, "branch") or ""

    def _serialize(self, start: str) -> bytes:
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers.items if k != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class SipRequest(SipMessage):
    method: str = ""
    uri: str = ""

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {SIP_VERSION}")


@dataclass
class SipResponse(SipMessage):
    status: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")


def tag_of(value: str) -> str | None:
    return param_of(value.rsplit(">", 1)[-1] if ">" in value else value, "tag")


def param_of(value: str, name: str) -> str | None:
    for part in value.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None


def uri_of(value: str) -> str:
    """The URI inside a name-addr (``"Bob" <sip:bob@host>;tag=x``) or an addr-spec."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0].strip()
    return value.split(";", 1)[0].strip()


def user_of(uri: str) -> str:
    """The user part of a SIP URI (the called number), without parameters."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[0].split(";", 1)[0] if "@" in rest else ""


def host_port_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    rest = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:")) else uri
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else default_port


def parse(data: bytes) -> SipRequest | SipResponse:
    """One SIP message from one datagram; raises SipParseError saying what is wrong."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message over {MAX_MESSAGE_BYTES} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").lstrip("\n").split("\n")
    start, headers = lines[0], _headers(lines[1:])
    message = _start(start, headers)
    for name in REQUIRED:
        if headers.get(name) is None:
            raise SipParseError(f"missing {canonical(name)} header")
    number, _, method = (headers.get("cseq") or "").strip().partition(" ")
    if not number.isdigit() or not _TOKEN.match(method.strip()) or int(number) >= 2**31:
        raise SipParseError("malformed CSeq header")
    if isinstance(message, SipRequest) and method.strip().upper() != message.method:
        raise SipParseError("CSeq method does not match the request method")
    message.body = _body(headers, body)
    return message


def _start(line: str, headers: Headers) -> SipRequest | SipResponse:
    parts = line.strip().split(" ", 2)
    if len(parts) == 3 and parts[0] == SIP_VERSION:
        if not (parts[1].isdigit() and len(parts[1]) == 3 and 100 <= int(parts[1]) < 700):
            raise SipParseError("malformed status line")
        return SipResponse(headers, b"", status=int(parts[1]), reason=parts[2])
    if len(parts) == 3 and parts[2] == SIP_VERSION and _TOKEN.match(parts[0]):
        if ":" not in parts[1]:
            raise SipParseError("malformed Request-URI")
        return SipRequest(headers, b"", method=parts[0].upper(), uri=parts[1])
    raise SipParseError("malformed start line")


def _headers(lines: list[str]) -> Headers:
    headers = Headers()
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":  # a folded continuation of the previous header
            if not headers.items:
                raise SipParseError("continuation line before any header")
            name, value = headers.items[-1]
            headers.items[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name.strip()):
            raise SipParseError(f"malformed header line {line[:40]!r}")
        headers.add(name, value.strip())
        if len(headers.items) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} headers")
    return headers


def _body(headers: Headers, body: bytes) -> bytes:
    length = headers.get("content-length")
    if length is None:  # allowed over UDP: the body is the rest of the datagram
        return body
    if not length.strip().isdigit():
        raise SipParseError("malformed Content-Length")
    n = int(length)
    if n > len(body):
        raise SipParseError("body shorter than Content-Length")
    return body[:n]


def response_to(
    request: SipRequest, status: int, reason: str, to_tag: str | None = None
) -> SipResponse:
    """A response carrying the request's Via, From, To (with our tag), Call-ID and CSeq."""
    headers = Headers()
    for name in ("via", "record-route"):
        for value in request.headers.get_all(name):
            headers.add(name, value)
    headers.add("From", request.headers.get("from") or "")
    to = request.headers.get("to") or ""
    if to_tag is not None and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", request.headers.get("cseq") or "")
    return SipResponse(headers, b"", status=status, reason=reason)


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}


def reason_for(status: int) -> str:
    return REASONS.get(status, "Unknown")


_SHORT = {"via": "v", "from": "f", "to": "t", "call-id": "i", "cseq": "cseq"}


def bad_request_for(data: bytes, why: str) -> bytes | None:
    """400 for a request that does not parse but whose headers still say where a reply goes
    (Via, From, To, Call-ID, CSeq); None for anything else (responses, ACKs, noise)."""
    text = data[:8192].decode("utf-8", "replace").replace("\r\n", "\n")
    first, _, rest = text.partition("\n")
    if first.startswith("SIP/") or first.startswith("ACK "):
        return None
    headers = Headers()
    for name in REQUIRED:
        found = re.search(rf"^(?:{name}|{_SHORT[name]})\s*:\s*(.+)$", rest, re.I | re.M)
        if found is None:
            return None
        headers.add(name, found.group(1).strip())
    reason = "Bad Request (" + re.sub(r"[^ -~]", "", why)[:60] + ")"
    return SipResponse(headers, b"", status=400, reason=reason).to_bytes()
