"""Fuzz a running voxgate over real WebSockets: ≥ 100,000 generated client frames across many
concurrent sessions, counting crashes, hangs and disconnects (target: 0 / 0 / 0).

Frames come from a seeded generator: well-formed events of every client type with plausible
fields, the same with one field replaced by a random JSON value (type included), dropped or
added, and raw garbage (non-JSON, binary frames, deep nesting, lone surrogates). Each session
checks in every ``--probe-every`` frames with a probe (``input_audio_buffer.clear`` with an
event id) and must see its ``input_audio_buffer.cleared`` within ``--hang-s``:

- crash: the server process exited;
- hang: a probe went unanswered in time;
- disconnect: the server closed a session that did not ask to end (it is reconnected and
  the run goes on).

Also counts the `error` events by code, and any error of type ``server_error`` (a server bug
caught at the last moment). Prints one JSON object.
Usage: ``python bench/fuzz_frames.py [--events 100000] [--sessions 16] [--url ws://…]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import time
from collections import Counter
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from _realtime import machine, parse_env, voxgate_server
from _speech import log

TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
)


class Frames:
    """A seeded source of client frames."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self) -> str:
        r = self.rng
        alphabet = 'abc xyz.,!?\n\u00e9\u4e2d\U0001f600\ud800\udfff"\\'
        return "".join(r.choice(alphabet) for _ in range(r.randrange(12)))

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(9 if depth < 3 else 6)
        scalars = [None, True, r.randrange(-(2**70), 2**70), r.random() * 1e9, self.text(), ""]
        if kind < 6:
            return scalars[kind]
        if kind < 8:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {self.text(): self.value(depth + 1) for _ in range(r.randrange(4))}

    def item(self) -> dict[str, Any]:
        r = self.rng
        part_type = r.choice(["input_text", "input_audio", "output_text", "text"])
        part = {"type": part_type, "text": self.text()}
        if part_type == "input_audio":
            part = {"type": part_type, "audio": base64.b64encode(r.randbytes(960)).decode()}
        item: dict[str, Any] = {
            "type": r.choice(["message", "function_call", "function_call_output"]),
            "role": r.choice(["user", "assistant", "system"]),
            "content": [part],
        }
        if r.random() < 0.3:
            item["id"] = r.choice(["item_a", "item_b", self.text()])
        return item

    def fields(self, kind: str) -> dict[str, Any]:
        r = self.rng
        if kind == "session.update":
            session: dict[str, Any] = {"type": "realtime"}
            if r.random() < 0.5:
                session["instructions"] = self.text()
            if r.random() < 0.3:
                session["output_modalities"] = [r.choice(["text", "audio"])]
            if r.random() < 0.2:
                session["audio"] = {"input": {"turn_detection": r.choice([None, self.value()])}}
            return {"session": session}
        if kind == "input_audio_buffer.append":
            return {"audio": base64.b64encode(r.randbytes(r.randrange(0, 4800, 2))).decode()}
        if kind == "conversation.item.create":
            return {"item": self.item()}
        if kind in ("conversation.item.retrieve", "conversation.item.delete"):
            return {"item_id": r.choice(["item_a", "item_b", self.text()])}
        if kind == "conversation.item.truncate":
            return {"item_id": "item_a", "content_index": 0, "audio_end_ms": r.randrange(5000)}
        if kind == "response.create":
            return {
                "response": {
                    "conversation": r.choice(["auto", "none"]),
                    "output_modalities": ["text"],
                    "max_output_tokens": r.randrange(1, 8),
                }
            }
        return {}

    def frame(self) -> str | bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.05:
            return r.randbytes(r.randrange(1, 40))
        if roll < 0.10:
            n = r.randrange(1, 3000)
            return r.choice(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "{not json"])
        kind = r.choice(TYPES)
        event: dict[str, Any] = {"type": kind, **self.fields(kind)}
        if r.random() < 0.5:
            event["event_id"] = self.text()
        if roll < 0.55:  # mutate one thing
            key = r.choice(sorted(event))
            how = r.randrange(3)
            if how == 0:
                event[key] = self.value()
            elif how == 1:
                del event[key]
            else:
                event[self.text()] = self.value()
        return json.dumps(event)


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.hangs = 0
        self.disconnects = 0
        self.errors: Counter[str] = Counter()
        self.server_errors: list[dict[str, Any]] = []
        self.close_codes: Counter[str] = Counter()


async def fuzz_session(
    url: str, frames: Frames, quota: int, tally: Tally, probe_every: int, hang_s: float
) -> None:
    """Send ``quota`` frames over as many connections as the server leaves us."""
    left = quota
    while left > 0:
        async with connect(url, max_size=None) as ws:
            left = await _one_connection(ws, frames, left, tally, probe_every, hang_s)


async def _one_connection(
    ws: ClientConnection, frames: Frames, left: int, tally: Tally, probe_every: int, hang_s: float
) -> int:
    answered: dict[str, asyncio.Event] = {}

    async def pump() -> None:
        async for message in ws:
            event = json.loads(message)
            if event.get("type") == "error":
                error = event["error"]
                tally.errors[str(error.get("code"))] += 1
                if error.get("type") == "server_error":
                    tally.server_errors.append(error)
            elif event.get("type") == "input_audio_buffer.cleared":
                for waiter in answered.values():
                    waiter.set()

    reader = asyncio.create_task(pump(), name="fuzz-reader")
    try:
        while left > 0:
            for _ in range(min(probe_every, left)):
                await ws.send(frames.frame())
                tally.sent += 1
                left -= 1
            probe = f"probe_{tally.sent}"
            answered[probe] = asyncio.Event()
            await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": probe}))
            try:
                async with asyncio.timeout(hang_s):
                    await answered[probe].wait()
            except TimeoutError:
                if reader.done():
                    raise ConnectionClosed(ws.close_rcvd, ws.close_sent) from None
                tally.hangs += 1
                log(f"  hang: no answer to {probe} within {hang_s} s")
                return left
            finally:
                answered.pop(probe, None)
    except ConnectionClosed:
        tally.disconnects += 1
        rcvd = ws.close_rcvd
        tally.close_codes[f"{rcvd.code} {rcvd.reason}" if rcvd else "no close frame"] += 1
        log(f"  disconnected after {tally.sent} frames: {rcvd}")
    finally:
        reader.cancel()
    return left


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    env = {"VOXGATE_MAX_SESSIONS": str(args.sessions * 2), **parse_env(args.server_env)}
    started = time.monotonic()
    crashed = False
    async with voxgate_server(args.url, env) as url:
        quota = args.events // args.sessions
        work = [
            fuzz_session(url, Frames(args.seed + i), quota, tally, args.probe_every, args.hang_s)
            for i in range(args.sessions)
        ]
        progress = asyncio.create_task(_progress(tally, args.events))
        try:
            await asyncio.gather(*work)
        except OSError as exc:  # refused connections: the server is gone
            log(f"server unreachable: {exc!r}")
            crashed = True
        finally:
            progress.cancel()
    seconds = time.monotonic() - started
    counts = {"crashes": int(crashed), "hangs": tally.hangs, "disconnects": tally.disconnects}
    result: dict[str, Any] = {
        "benchmark": "fuzz_frames",
        "events": tally.sent,
        "sessions": args.sessions,
        "seconds": round(seconds, 1),
        "events_per_s": round(tally.sent / seconds),
        **counts,
        "server_bug_errors": len(tally.server_errors),
        "server_bug_examples": tally.server_errors[:3],
        "close_codes": dict(tally.close_codes),
        "errors_by_code": dict(tally.errors.most_common()),
        "targets": {"events": args.events, "crashes": 0, "hangs": 0, "disconnects": 0},
        "met": {
            "events": tally.sent >= args.events,
            **{name: value == 0 for name, value in counts.items()},
            "server_bug_errors": not tally.server_errors,
        },
        "machine": machine(),
    }
    result["all_met"] = all(result["met"].values())
    return result


async def _progress(tally: Tally, total: int) -> None:
    while True:
        await asyncio.sleep(10)
        log(f"  {tally.sent}/{total} frames, {sum(tally.errors.values())} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--hang-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="fuzz this server instead of starting one")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
