"""How fast voxgate's SIP endpoint answers a call: INVITE → 200 OK on a route with a session
configuration (the call is admitted, its RTP port bound and its session started before the
200 goes out).

Starts ``voxgate serve`` (embedded engines) in a second process with a SIP listener, one
trunk for 127.0.0.1 and one route. The caller is voxgate's own SIP user agent over a real UDP
socket: ``--calls`` calls are placed one at a time (each answered, ACKed and hung up with BYE
before the next; the first one warms the server up and is not counted), then ``--burst``
calls are placed at once, ``--rounds`` times. The time of a call is from sending its INVITE to
receiving its 200 OK. The RTP capacity of concurrent calls is measured by
``bench/phone_capacity.py``, not here.

Prints one JSON object: p50/p95 of the sequential and the burst set-up times, the target and
whether it was met. Usage: ``python bench/sip_setup.py [--calls 30] [--burst 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from _realtime import machine, voxgate_server
from _speech import log, ms, percentile
from voxgate.transports.sip import sdp
from voxgate.transports.sip.endpoint import SipEndpoint
from voxgate.transports.sip.events import CallAnswered, CallEnded, CallFailed, Output

TARGET_P95_MS = 50.0
API_KEY = "sk-bench"
NUMBER = "+15551230000"
ANSWER_TIMEOUT_S = 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="calls one at a time (30)")
    parser.add_argument("--burst", type=int, default=10, help="calls placed at once (10)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts (3)")
    args = parser.parse_args()
    if args.calls < 2 or args.burst < 1 or args.rounds < 0:
        parser.error("--calls must be at least 2, --burst at least 1")
    return args


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(path: Path) -> Path:
    path.write_text(
        f"""
[sip]
rtp_ports = "35000-35999"

[[sip.trunks]]
name = "bench"
allowed_sources = ["127.0.0.1/32"]
key = "{API_KEY}"

[[sip.routes]]
number = "{NUMBER}"
[sip.routes.session]
instructions = "You answer the phone."
"""
    )
    return path


class Caller:
    """Places calls with voxgate's SIP user agent and times INVITE → 200 OK."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._sent: dict[str, float] = {}
        self.endpoint: SipEndpoint | None = None
        # Where the server's RTP goes: one socket that nobody reads (the kernel drops it).
        self._media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._media.bind(("127.0.0.1", 0))
        self.media_port = int(self._media.getsockname()[1])

    async def open(self) -> None:
        self.endpoint = await SipEndpoint.open("127.0.0.1", 0, "127.0.0.1", self._event)

    def _event(self, out: Output) -> None:
        if isinstance(out, CallAnswered | CallFailed | CallEnded):
            future = self._waiting.pop(out.call.id, None)
            if future is not None and not future.done():
                if isinstance(out, CallAnswered):
                    future.set_result(time.perf_counter() - self._sent[out.call.id])
                else:
                    future.set_exception(RuntimeError(f"call failed: {out}"))

    async def call(self) -> float:
        """One call: its set-up time; then BYE."""
        assert self.endpoint is not None
        offer = sdp.build(
            host="127.0.0.1",
            port=self.media_port,
            session_id=1,
            version=1,
            codecs=[("PCMU", 0)],
            dtmf_payload_type=101,
        )
        started = time.perf_counter()
        call = self.endpoint.invite(
            to_uri=f"sip:{NUMBER}@127.0.0.1:{self.server_port}",
            from_uri="sip:bench@127.0.0.1",
            target=("127.0.0.1", self.server_port),
            body=offer,
            local_media=("127.0.0.1", self.media_port),
        )
        self._sent[call.id] = started
        future = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = future
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                return await future
        finally:
            self.endpoint.hangup(call)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        self._media.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sip_port = udp_port()
    workdir = Path(tempfile.mkdtemp(prefix="voxgate-sip-bench-"))
    env = {
        "VOXGATE_API_KEYS": API_KEY,
        "VOXGATE_SIP_LISTEN": f"127.0.0.1:{sip_port}",
        "VOXGATE_CONFIG": str(config(workdir / "voxgate.toml")),
    }
    async with voxgate_server(None, env):
        caller = Caller(sip_port)
        await caller.open()
        try:
            await caller.call()  # warm-up
            sequential = [await caller.call() for _ in range(args.calls - 1)]
            log(f"sequential: {len(sequential)} calls")
            bursts: list[float] = []
            for _ in range(args.rounds):
                bursts += await asyncio.gather(*(caller.call() for _ in range(args.burst)))
                await asyncio.sleep(0.5)  # let the hung-up sessions end before the next burst
            log(f"bursts: {args.rounds} × {args.burst} calls")
        finally:
            caller.close()
    p95 = percentile(sequential, 95)
    return {
        "bench": "sip_setup",
        "what": "INVITE → 200 OK on a route with a session configuration",
        "sequential": {
            "calls": len(sequential),
            "p50_ms": ms(percentile(sequential, 50)),
            "p95_ms": ms(p95),
        },
        "burst": {
            "calls_at_once": args.burst,
            "rounds": args.rounds,
            "p50_ms": ms(percentile(bursts, 50)),
            "p95_ms": ms(percentile(bursts, 95)),
        },
        "target": {"sequential_p95_ms": TARGET_P95_MS},
        "met": p95 is not None and p95 * 1000 <= TARGET_P95_MS,
        "machine": machine(),
    }


def main() -> None:
    print(json.dumps(asyncio.run(run(parse_args())), indent=2))


if __name__ == "__main__":
    main()
