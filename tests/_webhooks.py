"""The operator's side of the SIP webhook flow: an HTTP endpoint that receives voxgate's
``realtime.call.incoming`` posts."""

from __future__ import annotations

import asyncio
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """The operator's webhook endpoint (real HTTP): each POST's body and headers."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.put((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/sip-incoming"

    async def next(self, timeout_s: float = 15) -> tuple[bytes, dict[str, str]]:
        return await asyncio.to_thread(self.received.get, True, timeout_s)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
