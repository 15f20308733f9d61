"""The session's ears: input audio → voice activity → turns; each turn's audio → transcript.

Main-loop code: `audio` and `transcribe` are called by the session's main loop with the
commands the connection returned, and return more output for it to apply. Work that waits on
an engine (speech-to-text) runs in tasks of the session's task group and reports back through
the inbox, like responses do: turn state (the detector's transcript, the items' transcripts)
changes only on the main loop.

Every committed user turn is transcribed, whether or not the client asked for transcription
events: the language model hears the user through the transcript. A response whose context
holds a turn still being transcribed waits for it (`ready`), at most `TRANSCRIPT_WAIT_S` of
the session's clock.

Speculative decoding: when a pause begins inside a turn (`PAUSE_MS` of silence), the audio so
far is decoded at once (engines whose streams can `peek`). If the user says nothing more
before the turn ends, that decode is the transcript: it is ready when the turn is declared
over instead of a decode later. If speech resumes, it is discarded (`_Turn.pauses` counts the
resumptions; a result from before the last one is stale). The pause-time transcript also
tells `semantic_vad` how finished the words sound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..audio import AudioFormat, InputConverter
from ..audio.denoise import NoiseKind, NoiseSuppressor
from ..engines.base import SpeculativeSTTStream, STTStream, Transcript
from ..engines.errors import EngineError
from ..protocol.connection import Output, RealtimeConnection
from ..protocol.ids import new_id
from ..protocol.items import Item
from ..protocol.session import SemanticVad, ServerVad
from .clock import Clock
from .engines import EngineSet
from .turns import IdleTimeout, SpeechStarted, SpeechStopped, TurnDetector

log = logging.getLogger(__name__)

Progress = Callable[[RealtimeConnection], list[Output]]
Post = Callable[[Progress], Awaitable[None]]
Spawn = Callable[[Awaitable[None], str], asyncio.Task[None]]
# Runs the transcription of one stream: feeds it, and returns a transcript already settled
# (a pause-time decode still valid at the end of the turn), or None for ``finish``.
Feed = Callable[[STTStream], Awaitable[Transcript | None]]

TRANSCRIPT_WAIT_S = 10.0
PAUSE_MS = 160.0  # silence inside a turn after which the words so far are decoded
LOGPROBS = "item.input_audio_transcription.logprobs"
# Committed items of one session waiting for speech-to-text; past it they fail at once.
MAX_QUEUED_COMMITS = 8
# Recent audio kept so a turn can start before the moment speech was detected.
_HISTORY_MS = 2000
_PUSH_LIMIT = 32000  # bytes per speech-to-text request (1 s at 16 kHz)
_PUSH_MIN = 3200  # 100 ms
# A turn's audio waiting for its speech-to-text task: ~32 s of 32 ms windows. Policy when
# full (the recogniser fell that far behind): the turn stops streaming, and its committed
# audio is transcribed whole at the end instead; nothing is lost.
_QUEUE_WINDOWS = 1000


@dataclass(frozen=True, slots=True)
class _Peek:
    """Decode what has been heard so far; ``pauses`` is the turn's count when asked."""

    pauses: int


_Queued = bytes | _Peek | None


@dataclass
class _Turn:
    item_id: str
    audio_start_ms: int
    queue: asyncio.Queue[_Queued] = field(default_factory=lambda: asyncio.Queue(_QUEUE_WINDOWS))
    task: asyncio.Task[None] | None = None
    pauses: int = 0  # times speech resumed after a pause decode was asked for
    peek_asked: bool = False  # for the pause in progress


@dataclass(frozen=True, slots=True)
class _Options:
    """What shapes a transcription: the client's language and prompt, whether it asked for
    log probabilities, and its noise reduction (kind, strength) for audio that did not pass
    through turn detection."""

    language: str | None = None
    prompt: str | None = None
    logprobs: bool = False
    noise: tuple[NoiseKind, float] | None = None


class Listener:
    def __init__(self, engines: EngineSet, post: Post, spawn: Spawn, clock: Clock) -> None:
        self._stt = engines.stt
        self._vad = engines.vad.open_stream() if engines.vad is not None else None
        self._rate = engines.vad.sample_rate if engines.vad is not None else 16000
        self._post = post
        self._spawn = spawn
        self._clock = clock
        self._converter: InputConverter | None = None
        self._suppressor: NoiseSuppressor | None = None
        window_ms = 1000 * (self._vad.window_samples if self._vad else 512) / self._rate
        self._window_bytes = 2 * (self._vad.window_samples if self._vad else 512)
        self.detector = TurnDetector(ServerVad(), window_ms)
        self._unwindowed = bytearray()  # audio the VAD holds back until a window is full
        self._history: deque[bytes] = deque(maxlen=int(_HISTORY_MS / window_ms))
        self._turn: _Turn | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: set[str] = set()  # items whose transcription streamed while they spoke
        # Speech-to-text workers are shared by every session: a session's committed items are
        # transcribed one at a time, at most MAX_QUEUED_COMMITS queued (the one being
        # transcribed included), so a client that commits in a loop occupies one worker.
        self._commit_slot = asyncio.Semaphore(1)
        self._queued_commits = 0

    # -- input audio ----------------------------------------------------------------------

    def audio(self, conn: RealtimeConnection, data: bytes, fmt: str) -> list[Output]:
        pcm = self._denoise(conn, self._convert(data, fmt))
        config = conn.config.audio.input.turn_detection
        if config is None or self._vad is None:
            self._abandon_turn()
            self.detector.position_ms += 1000 * len(pcm) / 2 / self._rate
            return []
        if config is not self.detector.config:
            self.detector.reconfigure(config)
        self._unwindowed += pcm
        out: list[Output] = []
        for p in self._vad.process(pcm):
            window = bytes(self._unwindowed[: self._window_bytes])
            del self._unwindowed[: self._window_bytes]
            out += self._window(conn, p, window, config)
        return out

    def _denoise(self, conn: RealtimeConnection, pcm: bytes) -> bytes:
        """``noise_reduction``: what VAD and speech-to-text hear is cleaned first."""
        setting = conn.config.audio.input.noise_reduction
        if setting is None:
            self._suppressor = None
            return pcm
        current = self._suppressor
        if current is None or (current.kind, current.strength) != (setting.type, setting.strength):
            self._suppressor = current = NoiseSuppressor(setting.type, setting.strength, self._rate)
        return current.process(pcm)

    def _convert(self, data: bytes, fmt: str) -> bytes:
        if self._converter is None or self._converter.format.type != fmt:
            self._converter = InputConverter(AudioFormat.from_type(fmt), self._rate)
        return self._converter.process(data)

    def _window(
        self, conn: RealtimeConnection, p: float, window: bytes, config: ServerVad | SemanticVad
    ) -> list[Output]:
        self._history.append(window)
        turn = self._turn
        if turn is not None:
            self._queue(turn, window)
        out: list[Output] = []
        for decision in self.detector.feed([p]):
            match decision:
                case SpeechStarted(audio_start_ms=start):
                    turn = self._start_turn(conn, start)
                    out += conn.speech_started(turn.item_id, start)
                case SpeechStopped(audio_end_ms=end) if turn is not None:
                    self._queue(turn, None)
                    self._turn = None
                    out += conn.speech_stopped(turn.item_id, turn.audio_start_ms, end)
                case IdleTimeout(audio_start_ms=start, audio_end_ms=end):
                    out += conn.idle_timeout(new_id("item"), start, end)
        if self._turn is not None:
            self._pause_check(self._turn)
        return out

    def _pause_check(self, turn: _Turn) -> None:
        silence = self.detector.silence_ms
        if silence == 0 and turn.peek_asked:
            # Speech resumed: what was decoded at the pause no longer covers the turn.
            turn.pauses += 1
            turn.peek_asked = False
        elif silence >= PAUSE_MS and not turn.peek_asked:
            turn.peek_asked = True
            self._queue(turn, _Peek(turn.pauses))

    def _queue(self, turn: _Turn, item: _Queued) -> None:
        if turn.task is None:
            return
        try:
            turn.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning(
                "speech-to-text fell behind on %s; it is transcribed at the end", turn.item_id
            )
            turn.task.cancel()
            turn.task = None
            self._live.discard(turn.item_id)

    def _start_turn(self, conn: RealtimeConnection, start_ms: int) -> _Turn:
        turn = _Turn(new_id("item"), start_ms)
        self._turn = turn
        if self._stt is None:
            return turn
        turn.task = self._track(
            self._spawn(self._transcribe_turn(turn, self._options(conn)), f"stt:{turn.item_id}")
        )
        self._live.add(turn.item_id)
        turn.task.add_done_callback(lambda _: self._live.discard(turn.item_id))
        # The turn begins before detection (prefix padding): replay that much history.
        window_ms = self.detector.window_ms
        first = self.detector.position_ms - window_ms * len(self._history)
        skip = max(0, int((start_ms - first) / window_ms))
        for i, window in enumerate(self._history):
            if i >= skip:
                self._queue(turn, window)
        return turn

    def _abandon_turn(self) -> None:
        if self._turn is not None and self._turn.task is not None:
            self._turn.task.cancel()
        self._turn = None

    # -- transcription --------------------------------------------------------------------

    def transcribe(
        self, conn: RealtimeConnection, item_id: str, audio: bytes, fmt: str
    ) -> list[Output]:
        """A user audio item was committed: make sure a transcript is on its way."""
        if self._stt is None:
            return conn.transcription_failed(
                item_id, "no speech-to-text engine is configured on this server"
            )
        if item_id not in self._live and self._queued_commits >= MAX_QUEUED_COMMITS:
            return conn.transcription_failed(
                item_id,
                f"{MAX_QUEUED_COMMITS} committed items are already waiting for speech-to-text "
                "in this session; commit less often.",
            )
        self._pending[item_id] = asyncio.get_running_loop().create_future()
        if item_id not in self._live:  # a client commit, or an idle timeout: transcribe now
            work = self._transcribe_audio(item_id, audio, fmt, self._options(conn))
            self._queued_commits += 1
            self._track(self._spawn(work, f"stt:{item_id}"))
        return []

    def ready(self, context: Iterable[Item]) -> Awaitable[None] | None:
        """Something to await before a response that sees ``context`` may read transcripts."""
        waits = {self._pending[i.id] for i in context if i.id in self._pending}
        if not waits:
            return None

        async def wait() -> None:
            # Past the bound the model gets a placeholder for the missing words, not silence.
            timer = asyncio.create_task(
                self._clock.sleep(TRANSCRIPT_WAIT_S), name="listener:transcript-wait"
            )
            transcripts = asyncio.gather(*waits, return_exceptions=True)
            try:
                either: set[asyncio.Future[Any]] = {timer, transcripts}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                transcripts.cancel()
                # A cancelled gather ends with CancelledError once its children have: read it,
                # or asyncio logs "exception was never retrieved" for every session closed
                # while a reply waited for words.
                transcripts.add_done_callback(_retrieve)

        return wait()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        # `spawn` is a method of the session that owns this listener: dropping it breaks the
        # reference cycle, so a closed session (and its conversation) is freed as soon as it
        # is let go, not at the next full garbage collection.
        self._spawn = _closed_spawn

    def _options(self, conn: RealtimeConnection) -> _Options:
        """The client's transcription settings, for the recogniser."""
        transcription = conn.config.audio.input.transcription
        noise = conn.config.audio.input.noise_reduction
        return _Options(
            language=transcription.language if transcription is not None else None,
            prompt=(transcription.prompt or None) if transcription is not None else None,
            logprobs=LOGPROBS in ((conn.transcription or conn.config).include or ()),
            noise=(noise.type, noise.strength) if noise is not None else None,
        )

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _transcribe_turn(self, turn: _Turn, options: _Options) -> None:
        reader = _Reader(turn.queue)

        async def feed(stream: STTStream) -> Transcript | None:
            settled: tuple[int, Transcript] | None = None
            heard = 0  # bytes
            while (item := await reader.take()) is not None:
                if isinstance(item, _Peek):
                    if isinstance(stream, SpeculativeSTTStream):
                        settled = (item.pauses, await stream.peek())
                        await self._report(turn, item.pauses, settled[1].text)
                    continue
                heard += len(item)
                partial = await stream.push(item)
                if partial is not None:
                    await self._report(turn, turn.pauses, partial)
            # Read at the end of the turn: still valid if speech never resumed after the
            # pause (what followed it was silence). Usage counts the whole turn's audio.
            if settled is None or settled[0] != turn.pauses:
                return None
            return replace(settled[1], audio_seconds=heard / 2 / self._rate)

        await self._run_stt(turn.item_id, options, feed)

    async def _report(self, turn: _Turn, pauses: int, text: str) -> None:
        """Words heard so far in ``turn``, for semantic_vad: through the inbox, because turn
        state changes only on the main loop; stale once speech resumed or the turn ended."""

        def heard(_conn: RealtimeConnection) -> list[Output]:
            if self._turn is turn and turn.pauses == pauses:
                self.detector.transcript = text
            return []

        await self._post(heard)

    async def _transcribe_audio(
        self, item_id: str, audio: bytes, fmt: str, options: _Options
    ) -> None:
        try:
            async with self._commit_slot:
                await self._transcribe_committed(item_id, audio, fmt, options)
        finally:
            self._queued_commits -= 1

    async def _transcribe_committed(
        self, item_id: str, audio: bytes, fmt: str, options: _Options
    ) -> None:
        converter = InputConverter(AudioFormat.from_type(fmt), self._rate)
        pcm = converter.process(audio) + converter.flush()
        if options.noise is not None:
            suppressor = NoiseSuppressor(*options.noise, sample_rate=self._rate)
            pcm = suppressor.process(pcm) + suppressor.flush()

        async def feed(stream: STTStream) -> Transcript | None:
            for start in range(0, len(pcm), _PUSH_LIMIT):
                await stream.push(pcm[start : start + _PUSH_LIMIT])
            return None

        await self._run_stt(item_id, options, feed)

    async def _run_stt(self, item_id: str, options: _Options, feed: Feed) -> None:
        assert self._stt is not None
        try:
            stream = await self._stt.open_stream(
                language=options.language, prompt=options.prompt, logprobs=options.logprobs
            )
            try:
                result = await feed(stream) or await stream.finish()
            finally:
                await stream.aclose()
        except EngineError as exc:
            log.warning("transcribing %s failed: %s", item_id, exc.message)
            message = exc.message
            await self._post(
                lambda c: self._settle(item_id, c.transcription_failed(item_id, message))
            )
            return
        await self._post(lambda c: self._settle(item_id, self._done(c, item_id, result)))

    def _done(self, conn: RealtimeConnection, item_id: str, result: Transcript) -> list[Output]:
        logprobs = (
            [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in result.logprobs]
            if result.logprobs is not None
            else None
        )
        return conn.transcription_done(
            item_id, result.text, result.audio_seconds, logprobs=logprobs
        )

    def _settle(self, item_id: str, out: list[Output]) -> list[Output]:
        """Runs on the main loop once the transcript is on the item: responses may go on."""
        future = self._pending.pop(item_id, None)
        if future is not None and not future.done():
            future.set_result(None)
        return out


class _Reader:
    """Takes a turn's queued audio for speech-to-text: at least `_PUSH_MIN` bytes (or what is
    left before a peek or the end of the turn), more if more is queued, up to the request
    limit. Each push is a round trip to a worker process (pocketsphinx): one per 100 ms, not
    one per 32 ms window, costs a third of the overhead and delays partial transcripts by at
    most 100 ms. A peek or the end is returned on its own, after the audio before it."""

    def __init__(self, queue: asyncio.Queue[_Queued]) -> None:
        self._queue = queue
        self._held: list[_Peek | None] = []

    async def take(self) -> _Queued:
        if self._held:
            return self._held.pop()
        chunks: list[bytes] = []
        size = 0
        while size < _PUSH_MIN or (size < _PUSH_LIMIT and not self._queue.empty()):
            nxt = await self._queue.get()
            if not isinstance(nxt, bytes):
                if not chunks:
                    return nxt
                self._held.append(nxt)
                break
            chunks.append(nxt)
            size += len(nxt)
        return b"".join(chunks)


def _closed_spawn(work: Awaitable[None], name: str) -> asyncio.Task[None]:
    if asyncio.iscoroutine(work):
        work.close()
    raise RuntimeError(f"cannot start {name}: the session is closed")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
