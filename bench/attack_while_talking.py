"""One session attacks, another talks: the talker's answer time must stay within 2× its
unloaded value (speech_stopped → first reply audio, p95).

Starts ``voxgate serve`` (embedded engines, built-in responder) unless ``--url`` is given. A
victim session speaks ``--turns`` turns (espeak speech on a live, paced microphone,
server_vad) with nobody else on the server, then again while one attacker session runs each
of the attacks below in a loop (the attacker reads its events, so only the attack itself
loads the server):

- ``long_word``: a 1,000,000-character word as a user item, answered with speech;
- ``unpunctuated``: 60 KB of text without punctuation, answered with speech;
- ``oob_flood``: 200 out-of-band audio ``response.create`` at once, again each second;
- ``append_clear``: 15 MiB ``input_audio_buffer.append`` then ``clear``, back to back;
- ``big_items``: 40 items of 4 MiB, then delete them, again;
- ``fuzz``: generated garbage and mutated events (as bench/fuzz_frames.py), flat out.

Each attack is paired with a baseline measured just before it (on a shared machine the load
from elsewhere drifts over a run). Prints one JSON object: per attack the victim's
stopped_to_audio median/p95/max with and without it, the ratio of the p95s, the attacker's
error codes and disconnects, and whether the 2× target held.
Usage: ``python bench/attack_while_talking.py [--turns 8] [--attacks long_word,…]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from _realtime import (
    Turn,
    machine,
    make_speech,
    parse_env,
    realtime_session,
    speak_turn,
    voxgate_server,
)
from _speech import SENTENCES, log, ms, percentile
from fuzz_frames import Frames

TARGET_RATIO = 2.0
SPEECH = {"output_modalities": ["audio"], "max_output_tokens": "inf"}


def user_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item | ({"id": item_id} if item_id else {})}


class Attacker:
    """One attacking session: sends what an attack dictates, reads (and counts) everything."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.errors: Counter[str] = Counter()
        self.waiters: dict[str, asyncio.Event] = {}

    async def pump(self) -> None:
        async for message in self.ws:
            event = json.loads(message)
            kind = event.get("type", "")
            if kind == "error":
                self.errors[str(event["error"].get("code"))] += 1
            if kind in self.waiters:
                self.waiters[kind].set()

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(event if isinstance(event, str | bytes) else json.dumps(event))

    async def until(self, kind: str, timeout_s: float = 120.0) -> None:
        waiter = self.waiters.setdefault(kind, asyncio.Event())
        waiter.clear()
        async with asyncio.timeout(timeout_s):
            await waiter.wait()


async def speak_text(attacker: Attacker, text: str) -> None:
    await attacker.send(user_item(text))
    await attacker.send({"type": "response.create", "response": SPEECH})
    await attacker.until("response.done", timeout_s=3600)


async def long_word(attacker: Attacker) -> None:
    await speak_text(attacker, "a" * 1_000_000)


async def unpunctuated(attacker: Attacker) -> None:
    await speak_text(attacker, " ".join(["word"] * 12_000))


async def oob_flood(attacker: Attacker) -> None:
    response = {"conversation": "none", **SPEECH}
    for _ in range(200):
        await attacker.send({"type": "response.create", "response": response})
    await asyncio.sleep(1.0)


async def append_clear(attacker: Attacker) -> None:
    audio = base64.b64encode(bytes(15 * 1024 * 1024)).decode()
    await attacker.send({"type": "input_audio_buffer.append", "audio": audio})
    await attacker.send({"type": "input_audio_buffer.clear"})
    await attacker.until("input_audio_buffer.cleared")


async def big_items(attacker: Attacker) -> None:
    text = "b" * (4 * 1024 * 1024)
    for i in range(40):
        await attacker.send(user_item(text, f"big_{i}"))
    for i in range(40):
        await attacker.send({"type": "conversation.item.delete", "item_id": f"big_{i}"})
    await attacker.send({"type": "input_audio_buffer.clear"})
    await attacker.until("input_audio_buffer.cleared")


FUZZ_FRAMES = Frames(7)


async def fuzz(attacker: Attacker) -> None:
    for _ in range(200):
        await attacker.send(FUZZ_FRAMES.frame())
    await attacker.send({"type": "input_audio_buffer.clear"})
    await attacker.until("input_audio_buffer.cleared")


ATTACKS: dict[str, Callable[[Attacker], Awaitable[None]]] = {
    "long_word": long_word,
    "unpunctuated": unpunctuated,
    "oob_flood": oob_flood,
    "append_clear": append_clear,
    "big_items": big_items,
    "fuzz": fuzz,
}


async def attack_loop(url: str, name: str, stop: asyncio.Event, found: dict[str, Any]) -> None:
    """Run the attack until told to stop; a server that disconnects the attacker (as it may:
    that is a bound doing its job) is recorded and reconnected to."""
    rounds, errors, disconnects = 0, Counter[str](), Counter[str]()
    try:
        while not stop.is_set():
            try:
                async with connect(url, max_size=None, compression=None) as ws:
                    attacker = Attacker(ws)
                    reader = asyncio.create_task(attacker.pump(), name="attacker-reader")
                    try:
                        while not stop.is_set():
                            await ATTACKS[name](attacker)
                            rounds += 1
                    finally:
                        reader.cancel()
                        errors.update(attacker.errors)
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                disconnects[f"{rcvd.code} {rcvd.reason}" if rcvd else "no close frame"] += 1
    finally:
        found.update(rounds=rounds, errors=dict(errors.most_common(6)))
        if disconnects:
            found["disconnected"] = dict(disconnects)


async def victim_turns(url: str, speech: list[bytes]) -> list[Turn]:
    turns: list[Turn] = []
    settings = {"max_output_tokens": 6}
    async with realtime_session(
        url, {"type": "server_vad", "silence_duration_ms": 500}, settings
    ) as s:
        await asyncio.sleep(1.0)
        for pcm in speech:
            turns.append(await speak_turn(s, pcm, stop_timeout=15.0, reply_timeout=60.0))
            await asyncio.sleep(0.5)
    return turns


def summary(turns: list[Turn]) -> dict[str, Any]:
    values = [t.stop_to_audio for t in turns if t.stop_to_audio is not None]
    return {
        "turns": len(turns),
        "answered": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p95_ms": ms(percentile(values, 95)),
        "max_ms": ms(max(values)) if values else None,
    }


async def phase(url: str, speech: list[bytes], attack: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    stop = asyncio.Event()
    attacking = None
    if attack is not None:
        attacking = asyncio.create_task(attack_loop(url, attack, stop, found))
        await asyncio.sleep(2.0)  # let the attack get going before the first turn
    try:
        result = summary(await victim_turns(url, speech))
    finally:
        stop.set()
        if attacking is not None:
            attacking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attacking
    return {**result, **({"attacker": found} if attack else {})}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    speech = await make_speech([SENTENCES[i % len(SENTENCES)] for i in range(args.turns)])
    phases: dict[str, Any] = {}
    async with voxgate_server(args.url, parse_env(args.server_env)) as url:
        log("warm-up (not counted: first turns load models and fill caches)")
        await phase(url, speech[:2], None)
        # Each attack is compared with a baseline measured just before it: on a shared
        # machine, load from elsewhere drifts more over a run than within one pair.
        for attack in args.attacks:
            log(f"baseline before {attack}")
            baseline = await phase(url, speech, None)
            log(f"attack {attack}")
            attacked = await phase(url, speech, attack)
            phases[attack] = {"baseline": baseline, "attacked": attacked}
            log(f"  {json.dumps(phases[attack])}")
    met: dict[str, bool] = {}
    for attack in args.attacks:
        base = phases[attack]["baseline"]["p95_ms"]
        attacked = phases[attack]["attacked"]
        p95 = attacked["p95_ms"]
        answered = attacked["answered"] == attacked["turns"]
        phases[attack]["ratio_p95"] = round(p95 / base, 2) if p95 and base else None
        met[f"{attack}.p95_within_{TARGET_RATIO:g}x"] = bool(
            answered and p95 is not None and base and p95 <= TARGET_RATIO * base
        )
    result: dict[str, Any] = {
        "benchmark": "attack_while_talking",
        "metric": "victim speech_stopped -> first reply audio (ms)",
        "phases": phases,
        "targets": {"p95_ratio_to_baseline": TARGET_RATIO},
        "met": met,
        "machine": machine(),
    }
    result["all_met"] = all(result["met"].values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8, help="victim turns per phase (8)")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated")
    parser.add_argument("--url", help="benchmark this server instead of starting one")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.attacks = [a for a in args.attacks.split(",") if a]
    if unknown := set(args.attacks) - set(ATTACKS):
        parser.error(f"unknown attacks {sorted(unknown)}; known: {list(ATTACKS)}")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
