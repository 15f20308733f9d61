"""Shared parts of the end-to-end benchmarks: a voxgate server in a subprocess, a Realtime
WebSocket client that streams a live microphone, and a record of what the server sent back."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from _speech import VOICES, log, ms, percentile, synthesize
from voxgate.engines.local.espeak import EspeakTTS

RATE = 24000  # the Realtime API's pcm input/output rate
CHUNK_SECONDS = 0.02
CHUNK_BYTES = 2 * round(RATE * CHUNK_SECONDS)
# Samples quieter than this (about -54 dBFS) at either end of a synthesised clip count as
# silence: espeak pads its output, and "end of speech" must mean the last audible sample.
SILENCE_LEVEL = 64
STT_MODEL = "gpt-4o-mini-transcribe"  # any name: the server uses its own engine


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def voxgate_server(url: str | None, extra_env: dict[str, str]) -> AsyncIterator[str]:
    """The WebSocket URL of a server: ``url`` if given, else a fresh ``voxgate serve`` on a
    free loopback port (embedded engines, built-in responder), stopped on exit.

    A subprocess rather than a thread in this process, so that the benchmark's own client
    work does not share the server's GIL and event loop and skew what is measured.
    """
    if url is not None:
        yield url
        return
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="voxgate-bench-"))
    # Only what we set: an LLM endpoint in the caller's environment would replace the
    # built-in responder whose latency the targets are about.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env |= {
        "VOXGATE_PORT": str(port),
        "VOXGATE_LOG_LEVEL": "warning",
        "VOXGATE_DATA_DIR": str(workdir / "data"),
    }
    env |= extra_env
    stderr_path = workdir / "server.log"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from voxgate.cli import main; main()",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        await _wait_healthy(port, process, stderr_path)
        log(f"server pid {process.pid} on port {port} (log: {stderr_path})")
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        await _stop(process)


async def _wait_healthy(port: int, process: asyncio.subprocess.Process, stderr: Path) -> None:
    # Speech-to-text workers may take a while to start on a busy machine.
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                text = await asyncio.to_thread(stderr.read_text, errors="replace")
                raise RuntimeError(f"voxgate exited with {process.returncode}:\n{text[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)  # start-up has no event to wait on: poll
    raise RuntimeError(f"voxgate did not answer /healthz within 90 s; see {stderr}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Ctrl-C first (graceful shutdown, workers stopped in order), then kill."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(20):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


class LoopLag:
    """How late a 10 ms ticker on the client's own loop woke while the ``async with`` block
    ran: if the client itself was starved, a late microphone is its fault rather than the
    server's."""

    def __init__(self) -> None:
        self.max_late = 0.0
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._ticker = asyncio.create_task(self._run(), name="bench-loop-lag")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def _run(self) -> None:
        period = 0.01
        while True:
            due = time.monotonic() + period
            await asyncio.sleep(period)
            self.max_late = max(self.max_late, time.monotonic() - due)


def level_failures(runs: Sequence[Any]) -> list[str]:
    """Every distinct failure in a capacity level: each run's own, and its turns' errors."""
    failures = {run.failure for run in runs if run.failure}
    return sorted(failures | {t.error for run in runs for t in run.turns if t.error})


def spread_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """The p50, p95 and max of some durations, in milliseconds (None where there are none)."""
    return {
        "p50": ms(percentile(seconds, 50)),
        "p95": ms(percentile(seconds, 95)),
        "max": ms(max(seconds, default=None)),
    }


def add_server_options(
    parser: argparse.ArgumentParser, *, max_output_tokens: int, url_note: str = ""
) -> None:
    """The options the live benchmarks share: which server, and how its replies are cut
    (`url_note`: what a benchmark's --url looks like, and what it then cannot measure)."""
    parser.add_argument("--url", help=f"benchmark this server instead of starting one{url_note}")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for the started server (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--max-output-tokens", default=max_output_tokens, type=token_limit,
        help=f"session max_output_tokens (default {max_output_tokens}): the server sends audio "
        "at about real time, so short replies keep the run short; 'inf' for full replies",
    )  # fmt: skip


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", …]`` from the command line."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def token_limit(text: str) -> int | str:
    """A session ``max_output_tokens`` from the command line: a number or "inf"."""
    return text if text == "inf" else int(text)


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


def trim_silence(pcm: bytes) -> bytes:
    """``pcm`` without the silence espeak puts before and after the words."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE_LEVEL)
    if loud.size == 0:
        return b""
    return samples[loud[0] : loud[-1] + 1].tobytes()


async def make_speech(texts: Sequence[str]) -> list[bytes]:
    """Each text spoken, voices in rotation, without the silence espeak adds around it (the
    microphone provides the silence)."""
    tts = EspeakTTS()
    try:
        return [
            trim_silence(await synthesize(tts, text, VOICES[i % len(VOICES)], RATE))
            for i, text in enumerate(texts)
        ]
    finally:
        await tts.aclose()


def parse_ladder(parser: argparse.ArgumentParser, ladder: str, turns: int) -> list[int]:
    """``--ladder`` as increasing session counts; ``--turns`` checked on the way."""
    levels = [int(n) for n in ladder.split(",") if n]
    if not levels or levels != sorted(levels) or levels[0] < 1:
        parser.error("--ladder must be increasing positive numbers")
    if turns < 1:
        parser.error("--turns must be at least 1")
    return levels


async def climb(
    ladder: list[int], run_level: Callable[[int], Awaitable[dict[str, Any]]], *, keep_going: bool
) -> tuple[list[dict[str, Any]], int]:
    """Run the levels of a capacity ladder in order, stopping at the first failure unless
    ``keep_going``; returns the levels and the largest session count that passed (with every
    level below it)."""
    levels: list[dict[str, Any]] = []
    for n in ladder:
        level = await run_level(n)
        levels.append(level)
        log(f"  {'passed' if level['passed'] else 'FAILED'}: {json.dumps(level['checks'])}")
        if "cpu" in level:
            log(f"  cpu: {json.dumps(level['cpu'])}")
        if not level["passed"] and not keep_going:
            break
        await asyncio.sleep(1.0)  # let the server close the level's sessions
    largest = 0
    for level in levels:
        if not level["passed"]:
            break
        largest = level["sessions"]
    return levels, largest


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def delta_seconds(b64: str) -> float:
    """Duration of a base64 PCM16 24 kHz delta, from its length: decoding every delta would
    cost the client CPU that the server needs."""
    size = len(b64) * 3 // 4 - b64[-2:].count("=")
    return size / 2 / RATE


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """One server event and when it arrived (``time.monotonic``)."""

    at: float
    type: str
    event: dict[str, Any]


@dataclass
class Spoken:
    """When an utterance's last audible sample went out, and where that is in the stream."""

    end_at: float
    end_stream_ms: float


class Mic:
    """A live microphone: 20 ms of pcm every 20 ms by a monotonic clock, silence between
    utterances. ``say`` queues an utterance; its future resolves once the last audible sample
    has been sent. ``max_late`` is how far the append loop ever fell behind its schedule."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._pending: deque[tuple[bytes, asyncio.Future[Spoken]]] = deque()
        self.max_late = 0.0
        self.chunks_sent = 0

    def say(self, pcm: bytes) -> asyncio.Future[Spoken]:
        done: asyncio.Future[Spoken] = asyncio.get_running_loop().create_future()
        self._pending.append((pcm, done))
        return done

    async def run(self) -> None:
        """Stream until cancelled."""
        start = time.monotonic()
        current = b""
        speaking: asyncio.Future[Spoken] | None = None
        while True:
            due = start + self.chunks_sent * CHUNK_SECONDS
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                self.max_late = max(self.max_late, now - due)
            if not current and self._pending:
                current, speaking = self._pending.popleft()
            chunk, current = current[:CHUNK_BYTES], current[CHUNK_BYTES:]
            # Utterances start on a chunk boundary; the last one is topped up with silence.
            audio = base64.b64encode(chunk.ljust(CHUNK_BYTES, b"\0")).decode()
            await self._ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            self.chunks_sent += 1
            if speaking is not None and not current:
                ended = (self.chunks_sent - 1) * CHUNK_SECONDS + len(chunk) / 2 / RATE
                speaking.set_result(Spoken(time.monotonic(), ended * 1000))
                speaking = None


@dataclass
class Inbox:
    """Server events in arrival order; ``next`` hands them out one at a time."""

    queue: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    async def pump(self, ws: ClientConnection) -> None:
        """Read until the socket closes; stamps each event on arrival."""
        async for message in ws:
            at = time.monotonic()
            event = json.loads(message)
            self.queue.put_nowait(Received(at, str(event.get("type")), event))

    async def next(self) -> Received:
        return await self.queue.get()


class ServerError(Exception):
    """The server answered with an ``error`` event."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


@dataclass
class Session:
    ws: ClientConnection
    mic: Mic
    inbox: Inbox
    tasks: list[asyncio.Task[None]]

    @property
    def failure(self) -> BaseException | None:
        """Why the microphone or the reader stopped early (the socket closed, say), if so."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None


@contextlib.asynccontextmanager
async def realtime_session(
    url: str, turn_detection: dict[str, Any], settings: dict[str, Any] | None = None
) -> AsyncIterator[Session]:
    """A connected session configured with ``turn_detection`` (and any other ``settings`` of
    the session object), its microphone streaming silence and its events being collected;
    both stop on exit."""
    async with connect(url, max_size=None, compression=None) as ws:
        # The server transcribes every turn anyway (its language model hears the transcript);
        # asking for the events lets us see a failed transcription, which otherwise shows
        # only as a reply that heard nothing.
        audio_input = {"turn_detection": turn_detection, "transcription": {"model": STT_MODEL}}
        session = {"type": "realtime", "audio": {"input": audio_input}, **(settings or {})}
        await _configure(ws, session)
        inbox, mic = Inbox(), Mic(ws)
        tasks = [
            asyncio.create_task(inbox.pump(ws), name="bench-inbox"),
            asyncio.create_task(mic.run(), name="bench-mic"),
        ]
        try:
            yield Session(ws, mic, inbox, tasks)
        finally:
            for task in tasks:
                task.cancel()
            # Their errors, if any, were reported through ``failure``.
            await asyncio.gather(*tasks, return_exceptions=True)


async def _configure(ws: ClientConnection, session: dict[str, Any]) -> None:
    """Wait for ``session.created``, send ``session``, wait for ``session.updated``."""
    update = {"type": "session.update", "session": session}
    async with asyncio.timeout(15):
        created = json.loads(await ws.recv())
        if created.get("type") != "session.created":
            raise ServerError(created.get("error", {"message": f"got {created.get('type')}"}))
        await ws.send(json.dumps(update))
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == "error":
                raise ServerError(event["error"])
            if event.get("type") == "session.updated":
                return


# ---------------------------------------------------------------------------------------------
# One spoken turn
# ---------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """What happened after one utterance, up to the ``response.done`` of the reply to it.

    Times are ``time.monotonic``. ``splits`` counts extra speech_stopped events inside the
    utterance (the detector ended the turn at a pause inside it)."""

    spoken: Spoken
    stopped_at: float | None = None
    stop_audio_end_ms: float | None = None
    item_id: str | None = None
    transcript: str | None = None
    transcript_at: float | None = None
    transcription_error: str | None = None
    response_id: str | None = None
    first_audio_at: float | None = None
    done_at: float | None = None
    status: str | None = None
    splits: int = 0
    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival, seconds)
    error: str | None = None

    def since_speech_end(self, at: float | None) -> float | None:
        return None if at is None else at - self.spoken.end_at

    @property
    def stop_to_audio(self) -> float | None:
        if self.first_audio_at is None or self.stopped_at is None:
            return None
        return self.first_audio_at - self.stopped_at


async def speak_turn(
    session: Session, pcm: bytes, *, stop_timeout: float, reply_timeout: float
) -> Turn:
    """Say ``pcm`` and follow the server's events until the reply to it is done.

    The reply is the response created after the last speech_stopped with no speech_started
    after it: a turn cut at a pause inside the utterance gets a response that the rest of
    the utterance interrupts, and that one is not the reply. Events that arrive while the
    utterance is still going out wait in the inbox, stamped with their arrival time.
    """
    turn = Turn(await session.mic.say(pcm))
    stop_deadline = turn.spoken.end_at + stop_timeout
    while turn.done_at is None and turn.error is None:
        waiting_for_stop = turn.stopped_at is None
        deadline = stop_deadline if waiting_for_stop else time.monotonic() + reply_timeout
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                received = await session.inbox.next()
            _follow(turn, received)
        except TimeoutError:
            turn.error = "no speech_stopped" if waiting_for_stop else "no response.done"
    # response.done comes when generation ends: the user listens until the reply has played
    # (a client's pace), as a person would before speaking again.
    await asyncio.sleep(max(0.0, playout_end(turn.audio) - time.monotonic()))
    return turn


def _loop_time(monotonic_deadline: float) -> float:
    """A ``time.monotonic`` deadline on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _follow(turn: Turn, received: Received) -> None:
    event = received.event
    match received.type:
        case "input_audio_buffer.speech_started":
            if turn.stopped_at is not None:
                turn.splits += 1
            # What follows belongs to the new speech, not to the part before the pause.
            turn.stopped_at = turn.response_id = turn.first_audio_at = None
            turn.item_id = turn.transcript = turn.transcript_at = turn.transcription_error = None
            turn.audio.clear()
        case "input_audio_buffer.speech_stopped" if received.at < turn.spoken.end_at:
            # The turn ended while the utterance was still being spoken: at a pause inside
            # it. Its reply (which may be done long before the utterance is) is not the reply.
            turn.splits += 1
        case "input_audio_buffer.speech_stopped":
            turn.stopped_at = received.at
            turn.stop_audio_end_ms = event.get("audio_end_ms")
            turn.item_id = event.get("item_id")
        case "conversation.item.input_audio_transcription.completed" if (
            event.get("item_id") == turn.item_id
        ):
            turn.transcript = event.get("transcript", "")
            turn.transcript_at = received.at
        case "conversation.item.input_audio_transcription.failed" if (
            event.get("item_id") == turn.item_id
        ):
            turn.transcription_error = str(event.get("error", {}).get("message"))
        case "response.created" if turn.stopped_at is not None:
            turn.response_id = event["response"]["id"]
        case "response.output_audio.delta" if event.get("response_id") == turn.response_id:
            if turn.first_audio_at is None:
                turn.first_audio_at = received.at
            turn.audio.append((received.at, delta_seconds(event.get("delta", ""))))
        case "response.done" if event["response"]["id"] == turn.response_id:
            turn.done_at = received.at
            turn.status = event["response"].get("status")
        case "error":
            turn.error = str(event.get("error", {}).get("message"))
        case _:
            pass


# A client buffers this much audio (or the whole reply, if shorter) before it starts playing,
# as audio players do to ride out network jitter; replies now arrive as fast as they are made,
# in bursts, rather than paced at real time.
CLIENT_PREBUFFER_S = 0.2


def playout_stall(
    audio: list[tuple[float, float]], prebuffer_s: float = CLIENT_PREBUFFER_S
) -> float:
    """Longest time a client would have had nothing to play once it started: it starts when
    ``prebuffer_s`` of audio has arrived (or the last delta did), then each delta plays after
    the one before, or when it arrives if that is later."""
    stall = 0.0
    if not audio:
        return stall
    buffered, start = 0.0, audio[-1][0]
    for arrival, seconds in audio:
        buffered += seconds
        if buffered >= prebuffer_s:
            start = arrival
            break
    played_until = start
    for arrival, seconds in audio:
        stall = max(stall, arrival - played_until)
        played_until = max(played_until, arrival) + seconds
    return stall


def playout_end(audio: list[tuple[float, float]], prebuffer_s: float = CLIENT_PREBUFFER_S) -> float:
    """When a client playing like ``playout_stall``'s would finish playing the reply."""
    if not audio:
        return 0.0
    buffered, played_until = 0.0, audio[-1][0]
    for arrival, seconds in audio:
        buffered += seconds
        if buffered >= prebuffer_s:
            played_until = arrival
            break
    for arrival, seconds in audio:
        played_until = max(played_until, arrival) + seconds
    return played_until
