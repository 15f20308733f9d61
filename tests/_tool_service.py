"""A tool service for the server-tools tests: a real HTTP server that records every call it
receives, checks voxgate's signature and caller identity the way a real service would, and
answers per path."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """The documented scheme, written out independently of voxgate's own code:
    ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``, within the tolerance."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not fields.get("t", "").isdigit() or abs(now - int(fields["t"])) > tolerance_s:
        return False
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields.get("v1", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool


class ToolService:
    """``/weather`` answers a forecast for the city; ``/slow`` the same after ``slow_s``;
    ``/delete`` says the account was deleted. A request without a valid signature is refused
    with 401 (and still recorded)."""

    def __init__(self, secret: str, slow_s: float = 1.5) -> None:
        outer = self
        self.calls: list[Received] = []
        self.arrived = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms wait

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers.get("X-Voxgate-Signature", "")
                ok = verify(secret, header, raw, time.time())
                body = json.loads(raw)
                with outer.arrived:
                    outer.calls.append(Received(self.path, dict(self.headers), body, ok))
                    outer.arrived.notify_all()
                if not ok:
                    return self._answer(401, {"error": "bad signature"})
                args = body["arguments"]
                if self.path == "/slow":
                    time.sleep(slow_s)  # the service is slow: what the filler covers
                if self.path in ("/weather", "/slow"):
                    return self._answer(
                        200, {"forecast": f"sunny and 21 degrees in {args['city']}"}
                    )
                if self.path == "/delete":
                    return self._answer(200, {"deleted": args["account_id"]})
                self._answer(404, {"error": "no such tool"})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def calls_to(self, path: str) -> list[Received]:
        with self.arrived:
            return [c for c in self.calls if c.path == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
