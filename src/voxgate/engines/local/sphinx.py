"""Embedded speech-to-text: pocketsphinx (en-us model from its wheel) in worker processes.

Decoding, and above all creating a decoder (~0.3 s holding the GIL), would stall the event
loop, so each decoder lives in its own worker process, created when the pool starts. A stream
is pinned to one worker from ``open_stream`` to ``finish``/``aclose``; streams beyond the pool
size wait (bounded) for a free worker. A worker that crashes or hangs fails the stream using
it with a retryable ``EngineError`` and is replaced.

Parent and worker talk over a ``multiprocessing`` pipe with ``(request_id, op, payload)``
requests and ``(request_id, status, value)`` replies; the parent watches the pipe with
``loop.add_reader``, so no thread blocks on it (POSIX event loops: asyncio's and uvloop).
Each stream has at most one request in flight, so the pipe never fills and ``send`` never
blocks the loop.

Accuracy note: the decoder normalises cepstra with a live mean (CMN) that it carries from one
utterance to the next, as pocketsphinx intends; so one utterance's result depends a little on
what that worker heard before. A worker's first utterance starts from the model's initial
mean, which can be far off (on espeak speech: word error 0.47 cold, 0.21 warm); so a worker
decodes its first utterance a second time, with the mean that the first pass learned. That
costs one extra decode per worker, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np

from voxgate.engines.base import Transcript
from voxgate.engines.errors import EngineError, EngineUnavailable

SAMPLE_RATE = 16000
# Options over pocketsphinx's own defaults. Turning off the flat-lexicon second pass
# ("fwdflat": False) cut the final transcript after the end of speech from 143 ms to 28 ms
# (median) with no change in word error on test-sized speech, but it lost key words of the
# embedded voice's speech in whole turns, so the second pass stays on.
DEFAULT_DECODER_OPTIONS: dict[str, Any] = {}
_MAX_REQUEST_BYTES = 2 * SAMPLE_RATE  # one second of audio
log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Worker process side (synchronous; runs in the child)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WorkerConfig:
    decoder_options: dict[str, Any]
    # Exact digital silence (synthetic speech, muted inputs) drives the decoder's log
    # spectra and its carried cepstral mean to extremes; a noise floor far below any
    # microphone's keeps them sane. On espeak speech: word error 0.42 without, 0.21 at -60.
    noise_floor_dbfs: float | None


class _DecoderHost:
    """One pocketsphinx decoder and whether an utterance is open on it."""

    def __init__(self, config: _WorkerConfig) -> None:
        # Imported here: the parent process never loads pocketsphinx.
        from pocketsphinx import Decoder  # type: ignore[import-untyped]  # ships no types

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **config.decoder_options)
        self._in_utterance = False
        floor = config.noise_floor_dbfs
        self._noise_rms = None if floor is None else 32768 * 10 ** (floor / 20)
        self._rng = np.random.default_rng(0)
        # Until the live mean has adapted to real audio, the utterance is kept for a redo.
        self._cold = True
        self._heard: list[bytes] = []

    def handle(self, op: str, payload: bytes | None) -> str | None:
        if op == "start":
            self.abort()  # a stream that vanished without aclose left one open
            self._rng = np.random.default_rng(0)  # same audio, same noise: reproducible
            self._decoder.start_utt()
            self._in_utterance = True
            return None
        if op == "audio" and payload is not None:
            audio = self._with_noise_floor(payload)
            if self._cold:
                self._heard.append(audio)
            self._decoder.process_raw(audio, False, False)
            return self._text()
        if op == "end":
            self._decoder.end_utt()
            self._in_utterance = False
            if self._cold:
                self._redo_cold()
            return self._text()
        if op == "abort":
            self.abort()
            return None
        raise ValueError(f"unknown request {op!r}")

    def abort(self) -> None:
        self._heard.clear()
        if self._in_utterance:
            self._decoder.end_utt()
            self._in_utterance = False

    def _redo_cold(self) -> None:
        """Decode the first utterance again, now that end_utt has moved the mean to it. Too
        short an utterance teaches the mean little: wait for a longer one."""
        audio, self._heard = b"".join(self._heard), []
        if len(audio) < SAMPLE_RATE * 2:  # one second of PCM16
            return
        self._cold = False
        self._decoder.start_utt()
        self._decoder.process_raw(audio, False, True)
        self._decoder.end_utt()

    def _with_noise_floor(self, pcm: bytes) -> bytes:
        if self._noise_rms is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        samples += self._rng.normal(0.0, self._noise_rms, samples.size).astype(np.float32)
        return np.clip(samples, -32768, 32767).astype("<i2").tobytes()

    def _text(self) -> str:
        hyp = self._decoder.hyp()
        return str(hyp.hypstr) if hyp is not None else ""


def _serve(conn: Connection, config: _WorkerConfig) -> None:
    """Worker main: answer requests until told to stop or until the parent closes the pipe
    or dies (EOF, EPIPE), so that a killed parent leaves no orphan behind."""
    # Ctrl-C reaches the whole process group; shutdown is the parent's to order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(EOFError, OSError):
        _answer(conn, config)


def _answer(conn: Connection, config: _WorkerConfig) -> None:
    started = time.perf_counter()
    try:
        host = _DecoderHost(config)
    except Exception as exc:  # report any failure to build the decoder, then exit
        conn.send((0, "error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send((0, "ok", time.perf_counter() - started))
    while True:
        request_id, op, payload = conn.recv()
        if op == "stop":
            return
        try:
            reply = (request_id, "ok", host.handle(op, payload))
        except Exception as exc:  # the decoder's errors go back to the stream that asked
            reply = (request_id, "error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------


def _gone(message: str) -> EngineError:
    return EngineError(message, origin="stt", retryable=True)


@dataclass(frozen=True, slots=True)
class _Limits:
    """Seconds allowed for a worker to create its decoder, to answer one request, and to exit
    when asked before it is killed."""

    start: float
    request: float
    stop: float = 2.0


class _Worker:
    """The parent's handle on one worker process: awaitable requests over its pipe.

    Two file descriptors are watched: the pipe (replies; EOF when the worker dies) and the
    process sentinel (readable once it has exited), which reaps it so no zombie is left.
    """

    def __init__(
        self,
        context: BaseContext,
        config: _WorkerConfig,
        limits: _Limits,
        on_exit: Callable[[_Worker], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._limits = limits
        self._on_exit = on_exit
        parent_end, child_end = context.Pipe()
        self._conn = parent_end
        self._process = context.Process(  # type: ignore[attr-defined]  # BaseContext lacks it
            target=_serve, args=(child_end, config), name="voxgate-stt", daemon=True
        )
        self._process.start()
        # Without closing our copy of the child's end, its exit would never show as EOF.
        child_end.close()
        self.pid: int = self._process.pid
        self.alive = True
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[float] = self._loop.create_future()
        # Mark a failure as seen even if start-up was abandoned and nobody awaits it.
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending: dict[int, asyncio.Future[Any]] = {0: self._ready}
        self.reaped: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)
        self._loop.add_reader(self._process.sentinel, self._on_process_exit)

    async def ready(self) -> float:
        """Wait until the decoder exists; return how long the worker took to create it."""
        try:
            async with asyncio.timeout(self._limits.start):
                return await self._ready
        except TimeoutError:
            self.kill()
            raise _gone(f"speech-to-text worker not ready after {self._limits.start} s") from None

    @property
    def was_ready(self) -> bool:
        """Whether the worker ever got its decoder (a worker that never did is not replaced:
        its replacement would most likely fail the same way)."""
        ready = self._ready
        return ready.done() and not ready.cancelled() and ready.exception() is None

    async def request(self, op: str, payload: bytes | None) -> Any:
        """Send one request and wait for its reply. A worker that does not answer in time
        is killed: a hung decoder is treated like a crashed one."""
        if not self.alive:
            raise _gone("speech-to-text worker exited")
        request_id = next(self._ids)
        reply = self._pending[request_id] = self._loop.create_future()
        try:
            self._conn.send((request_id, op, payload))
        except OSError:  # the worker closed its end: it is exiting
            self._exited()
            raise _gone("speech-to-text worker exited") from None
        try:
            async with asyncio.timeout(self._limits.request):
                return await reply
        except TimeoutError:
            self.kill()
            raise _gone(
                f"speech-to-text worker did not answer within {self._limits.request} s"
            ) from None
        finally:
            # A cancelled request's late reply then finds nobody and is dropped.
            self._pending.pop(request_id, None)

    def notify(self, op: str) -> None:
        """Send a request whose reply nobody waits for."""
        if self.alive:
            try:
                self._conn.send((next(self._ids), op, None))
            except OSError:
                self._exited()

    def kill(self) -> None:
        if not self.reaped.done():
            self._process.kill()
        self._exited()

    async def stop(self) -> None:
        """Ask the worker to exit, kill it if it does not, and wait until it is reaped."""
        self.notify("stop")
        self._exited()
        try:
            async with asyncio.timeout(self._limits.stop):
                await asyncio.shield(self.reaped)
        except TimeoutError:
            self.kill()
            async with asyncio.timeout(self._limits.stop):
                await self.reaped

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                request_id, status, value = self._conn.recv()
                reply = self._pending.pop(request_id, None)
                if reply is None or reply.done():
                    continue
                if status == "ok":
                    reply.set_result(value)
                else:
                    reply.set_exception(EngineError(f"pocketsphinx: {value}", origin="stt"))
        except (EOFError, OSError):
            self._exited()

    def _on_process_exit(self) -> None:
        self._loop.remove_reader(self._process.sentinel)
        self._process.join()  # returns at once: the sentinel says it has exited
        self._process.close()
        self._exited()
        self.reaped.set_result(None)

    def _exited(self) -> None:
        """The worker is gone (or going): fail whoever waits on it and tell the pool, once."""
        if not self.alive:
            return
        self.alive = False
        self._loop.remove_reader(self._conn.fileno())
        self._conn.close()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(_gone("speech-to-text worker exited"))
        self._pending.clear()
        self._on_exit(self)


class PocketsphinxStream:
    """One utterance on a pinned worker (``STTStream``). ``push`` and ``finish`` are
    serialised; after ``finish``, a failure or ``aclose`` the worker goes back to the pool."""

    def __init__(self, engine: PocketsphinxEngine, worker: _Worker) -> None:
        self._engine = engine
        self._worker: _Worker | None = worker
        self._lock = asyncio.Lock()
        self._samples = 0
        self._odd_byte = b""
        self._partial = ""

    async def push(self, pcm: bytes) -> str | None:
        """Decode more audio; return the partial hypothesis when it changed."""
        async with self._lock:
            data = self._odd_byte + pcm
            usable = len(data) - len(data) % 2
            self._odd_byte = data[usable:]
            text = self._partial
            # Big pushes go in pieces so that each request has a bounded decoding time.
            for start in range(0, usable, _MAX_REQUEST_BYTES):
                piece = data[start : min(start + _MAX_REQUEST_BYTES, usable)]
                text = await self._request("audio", piece)
                self._samples += len(piece) // 2
        if text and text != self._partial:
            self._partial = text
            return text
        return None

    async def finish(self) -> Transcript:
        """End the utterance and return the final transcript."""
        async with self._lock:
            text: str = await self._request("end", None)
            self._close_now()
        return Transcript(text=text, audio_seconds=self._samples / SAMPLE_RATE)

    async def aclose(self) -> None:
        """Give the worker back; an unfinished utterance is dropped. Idempotent."""
        self._close_now()

    def _close_now(self) -> None:
        # Synchronous, so that it also runs to the end inside a cancelled task.
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.notify("abort")  # ordered before whatever the next stream sends
            self._engine._release(worker)

    async def _request(self, op: str, payload: bytes | None) -> Any:
        if self._worker is None:
            raise RuntimeError(f"{op} on a speech-to-text stream that is already closed")
        try:
            return await self._worker.request(op, payload)
        except EngineError:
            self._close_now()
            raise


class PocketsphinxEngine:
    """The embedded speech-to-text engine (``STTEngine``): a pool of pocketsphinx workers.

    Create it with ``await PocketsphinxEngine.start(...)``; close it with ``aclose``.
    """

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE
    logprobs = False

    def __init__(
        self,
        *,
        context: BaseContext,
        config: _WorkerConfig,
        acquire_timeout: float,
        request_timeout: float,
        start_timeout: float,
    ) -> None:
        self._context = context
        self._config = config
        self._limits = _Limits(start=start_timeout, request=request_timeout)
        self.acquire_timeout = acquire_timeout
        self._workers: set[_Worker] = set()
        # None is the "closed" mark: whoever takes it puts it back, waking every waiter.
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        self._replacements: set[asyncio.Task[None]] = set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self.startup_seconds: list[float] = []

    @classmethod
    async def start(
        cls,
        workers: int | None = None,
        *,
        acquire_timeout: float = 10.0,
        request_timeout: float = 15.0,
        start_timeout: float = 60.0,
        start_method: str = "spawn",
        decoder_options: dict[str, Any] | None = None,
        noise_floor_dbfs: float | None = -60.0,
    ) -> PocketsphinxEngine:
        """Start ``workers`` processes (default: one per CPU) and wait until each has its
        decoder. ``start_method`` is "spawn" or "forkserver": fork is unsafe once threads or
        an event loop exist. ``decoder_options`` go to ``pocketsphinx.Decoder``, over
        ``DEFAULT_DECODER_OPTIONS``; ``noise_floor_dbfs`` adds that much white noise to the
        audio (None: none).

        With "spawn" each worker imports the main module anew: a script that starts the
        engine must guard its entry point with ``if __name__ == "__main__":``."""
        if importlib.util.find_spec("pocketsphinx") is None:
            raise EngineUnavailable("install the 'pocketsphinx' package", origin="stt")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method must be 'spawn' or 'forkserver', not {start_method!r}")
        engine = cls(
            context=multiprocessing.get_context(start_method),
            config=_WorkerConfig(
                {**DEFAULT_DECODER_OPTIONS, **(decoder_options or {})}, noise_floor_dbfs
            ),
            acquire_timeout=acquire_timeout,
            request_timeout=request_timeout,
            start_timeout=start_timeout,
        )
        try:
            await engine._start_workers(workers or os.cpu_count() or 1)
        except BaseException:
            await engine.aclose()
            raise
        return engine

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        return sorted(w.pid for w in self._workers if w.alive)

    async def open_stream(
        self, *, language: str | None = None, prompt: str | None = None, logprobs: bool = False
    ) -> PocketsphinxStream:
        """Pin a free worker to a new utterance, waiting up to ``acquire_timeout`` for one.
        ``prompt`` is ignored: pocketsphinx decodes against a fixed language model; it has no
        token log probabilities."""
        if language and language.lower().replace("_", "-").split("-")[0] != "en":
            raise EngineError(f"pocketsphinx speaks English only, not {language!r}", origin="stt")
        stream = PocketsphinxStream(self, await self._acquire())
        try:
            await stream._request("start", None)
        except BaseException:
            stream._close_now()  # cancelled or failed here, the worker must not leak
            raise
        return stream

    async def aclose(self) -> None:
        """Stop every worker (asking first, then killing) and fail waiting streams.
        Idempotent; returns when no worker process is left, even if the caller is cancelled
        meanwhile (the stopping goes on, shielded)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name="stt-engine-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._closed = True
        while not self._idle.empty():
            self._idle.get_nowait()
        self._idle.put_nowait(None)
        for task in self._replacements:
            task.cancel()
        await asyncio.gather(*self._replacements, return_exceptions=True)
        async with asyncio.TaskGroup() as group:
            for worker in list(self._workers):
                group.create_task(worker.stop(), name="stt-worker-stop")

    async def _start_workers(self, count: int) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(count):
                    group.create_task(self._admit(self._spawn()), name="stt-worker-start")
        except* EngineError as failed:
            raise EngineUnavailable(
                f"speech-to-text workers failed to start: {failed.exceptions[0]}", origin="stt"
            ) from None

    def _spawn(self) -> _Worker:
        worker = _Worker(self._context, self._config, self._limits, self._on_worker_exit)
        # Tracked until reaped, not merely until it fails, so aclose waits for every process.
        self._workers.add(worker)
        worker.reaped.add_done_callback(lambda _: self._workers.discard(worker))
        return worker

    async def _admit(self, worker: _Worker) -> None:
        self.startup_seconds.append(await worker.ready())
        self._release(worker)

    def _release(self, worker: _Worker) -> None:
        if worker.alive and not self._closed:
            self._idle.put_nowait(worker)

    async def _acquire(self) -> _Worker:
        try:
            async with asyncio.timeout(self.acquire_timeout):
                while True:
                    worker = await self._idle.get()
                    if worker is None or self._closed:
                        self._idle.put_nowait(None)
                        raise EngineError("speech-to-text engine is closed", origin="stt")
                    if worker.alive:  # one that died while idle is skipped
                        return worker
        except TimeoutError:
            raise EngineError(
                f"no free speech-to-text worker within {self.acquire_timeout} s",
                origin="stt",
                retryable=True,
            ) from None

    def _on_worker_exit(self, worker: _Worker) -> None:
        if self._closed or not worker.was_ready:
            return
        log.warning("speech-to-text worker %d exited; starting a replacement", worker.pid)
        task = asyncio.create_task(self._replace(), name="stt-worker-replace")
        self._replacements.add(task)
        task.add_done_callback(self._replacements.discard)

    async def _replace(self) -> None:
        try:
            await self._admit(self._spawn())
        except EngineError as exc:
            # The pool runs one short; open_stream's bounded wait makes that visible.
            log.error("replacement speech-to-text worker failed: %s", exc)
