"""The embedded pipeline as a session's driver: the sans-IO connection interprets client
events; the `Listener` turns input audio into turns and transcripts; one `ResponseRunner`
task per response turns a plan into language-model text and speech."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, assert_never

from ..audio import PCM16, AudioFormat, FormatConverter
from ..protocol import events as ev
from ..protocol.commands import CancelResponse, InputAudio, StartResponse, TranscribeItem
from ..protocol.connection import Output, RealtimeConnection
from .disclosure import SpokenText, is_disclosure
from .driver import DriverCommand, DriverHost, DriverOutput
from .engines import EngineSet
from .listener import Listener
from .mcp import SessionMcp
from .response import ResponseRunner
from .tool_flow import SessionTools
from .transport import PlayoutCut


class PipelineDriver:
    name = "pipeline"

    def __init__(
        self,
        engines: EngineSet,
        tools: SessionTools | None = None,
        mcp: SessionMcp | None = None,
    ) -> None:
        self.engines = engines
        # Server tools: offered to the model, and their calls run by the runners.
        self.tools = tools
        # The session's MCP calls run inside responses (session/mcp.py).
        self.mcp = mcp
        self._host: DriverHost | None = None
        self._listener: Listener | None = None
        self._responses: dict[str, asyncio.Task[None]] = {}
        # Media-track audio → the session's input format; streaming, so chunks join seamlessly.
        self._from_track: FormatConverter | None = None

    @property
    def host(self) -> DriverHost:
        assert self._host is not None, "bind the driver to its session first"
        return self._host

    @property
    def listener(self) -> Listener:
        assert self._listener is not None, "bind the driver to its session first"
        return self._listener

    def bind(self, host: DriverHost) -> None:
        self._host = host
        self._listener = Listener(self.engines, host.post, host.spawn, host.clock)

    def start(self, conn: RealtimeConnection) -> list[Output]:
        return conn.start()

    def session_created(self, conn: RealtimeConnection) -> ev.ServerEvent:
        return conn.session_created()

    def receive(self, conn: RealtimeConnection, raw: str | bytes) -> list[Output]:
        return conn.receive(raw)

    def track_audio(
        self, conn: RealtimeConnection, audio: bytes, fmt: AudioFormat = PCM16
    ) -> list[Output]:
        """Track audio (24 kHz PCM16, or ``fmt``: 8 kHz G.711 from a phone line goes into a
        G.711 input buffer unchanged)."""
        dst = AudioFormat.from_type(conn.input_format)
        track = self._from_track
        if track is None or (track.src, track.dst) != (fmt, dst):
            track = self._from_track = FormatConverter(fmt, dst)
        return conn.append_track_audio(track.process(audio))

    def command(self, conn: RealtimeConnection, cmd: DriverCommand) -> Sequence[DriverOutput]:
        match cmd:
            case StartResponse(plan=plan):
                host, limits = self.host, self.host.limits
                # The disclosure is spoken word for word, not generated.
                engines = self.engines
                if is_disclosure(plan):
                    engines = replace(engines, llm=SpokenText())
                if self.tools is not None:
                    plan = self.tools.offer(plan)
                runner = ResponseRunner(
                    plan,
                    engines,
                    host.post,
                    host.media_space,
                    before=self.listener.ready(plan.context),
                    lead_s=limits.audio_lead_s,
                    clock=host.clock,
                    context_tokens=limits.llm_context_tokens,
                    max_speech_chars=limits.max_speech_chars,
                    tools=self.tools,
                    mcp=self.mcp or host.mcp,
                )
                self._start_response(plan.response_id, runner)
                return []
            case CancelResponse(response_id=rid):
                task = self._responses.pop(rid, None)
                if task is not None:
                    task.cancel()
                return []
            case InputAudio(data=data, format=fmt):
                return self.listener.audio(conn, data, fmt)
            case TranscribeItem(item_id=item_id, audio=audio, format=fmt):
                return self.listener.transcribe(conn, item_id, audio, fmt)
            case _:
                assert_never(cmd)

    @property
    def busy(self) -> bool:
        return bool(self._responses)

    def stop_responses(self, conn: RealtimeConnection, details: dict[str, Any]) -> list[Output]:
        out: list[Output] = []
        for rid in list(conn.responses):
            out += conn.finish_response(rid, "cancelled", details)
            out.append(CancelResponse(rid))
        return out

    def playout_cut(self, conn: RealtimeConnection, cut: PlayoutCut) -> list[Output]:
        return conn.output_audio_cleared(
            cut.response_id, cut.item_id, cut.content_index, cut.played_ms
        )

    def playout_stopped(self, conn: RealtimeConnection, response_id: str) -> list[Output]:
        return conn.output_audio_stopped(response_id)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._responses.values()):
            task.cancel()
        # The host holds methods of the session: dropping it breaks the reference cycle.
        self._host = None

    def _start_response(self, rid: str, runner: ResponseRunner) -> None:
        task = self.host.spawn(runner.run(), rid)
        self._responses[rid] = task
        self.listener.detector.pause_idle()
        task.add_done_callback(lambda _: self._response_ended(rid))

    def _response_ended(self, rid: str) -> None:
        self._responses.pop(rid, None)
        if not self._responses and self._listener is not None:
            self._listener.detector.resume_idle()
        # The idle time counts from the end of the last response, not from its start.
        if self._host is not None:
            self._host.touch()
