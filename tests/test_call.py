"""``voxgate call``: real calls into a running voxgate, a scripted server for the exact wire
behaviour (pacing, silence, timeouts), WAV input handling and the command line's exit codes."""

from __future__ import annotations

import base64
import io
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner
from websockets.asyncio.server import ServerConnection, serve

import conftest
from _realtime import rms
from conftest import RunningServer, free_port, speech_pcm24k
from voxgate.audio import resample
from voxgate.call import (
    CallOptions,
    CallResult,
    read_wav,
    realtime_url,
    run_call,
)
from voxgate.cli import app
from voxgate.settings import Settings

PIZZA = "I would like to order a pizza"
KEY = "sk-call-test"


async def call(**options: Any) -> tuple[CallResult, str]:
    out = io.StringIO()
    result = await run_call(CallOptions(**options), out)
    return result, out.getvalue()


def write_wav(path: Path, pcm: bytes, *, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


def read_reply(path: Path) -> tuple[int, int, int, bytes]:
    with wave.open(str(path), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        return wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), frames


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")


def assert_spoken_reply(path: Path) -> None:
    """A 24 kHz mono 16-bit WAV holding more than a second of audible sound."""
    rate, channels, width, pcm = read_reply(path)
    assert (rate, channels, width) == (24000, 1, 2)
    assert len(pcm) / 48000 > 1.0
    assert rms(pcm) > 300, f"reply audio is (nearly) silent: rms {rms(pcm):.0f}"


# ---------------------------------------------------------------------------------------------
# Real calls into voxgate
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One voxgate on the embedded engines that requires an API key, for the real calls."""
    running = RunningServer(Settings(port=free_port(), api_keys=[KEY]), None)
    running.start()
    yield running
    running.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["server_vad", "semantic_vad"])
async def test_spoken_text_gets_a_spoken_reply(
    server: RunningServer, tmp_path: Path, mode: str
) -> None:
    started = time.monotonic()
    result, printed = await call(
        text=PIZZA,
        url=server.ws_url,
        api_key=KEY,
        out=tmp_path / "reply.wav",
        turn_detection=mode,
        timeout_s=20,
    )
    elapsed = time.monotonic() - started
    assert result.ok, f"{result.error}\n{printed}"
    # The server's turn detection heard the speech start and end, and transcribed it.
    assert "[speech started at" in printed and "[speech stopped at" in printed
    assert conftest.heard(" ".join(result.user_transcripts), {"order", "pizza"}), (
        result.user_transcripts
    )
    assert f"you: {result.user_transcripts[0]}" in printed
    # The built-in responder repeats what it heard: the reply answers this speech.
    assert "order" in result.assistant_transcript.lower()
    assert f"assistant: {result.assistant_transcript}" in printed
    assert result.response_status == "completed"
    assert f"reply {result.response_id}: completed" in printed
    assert result.usage is not None and result.usage["output_tokens"] > 0
    assert "usage: " in printed and "latency: " in printed
    assert result.latency_s is not None and 0 < result.latency_s < 10
    assert result.saved_to == tmp_path / "reply.wav"
    assert_spoken_reply(result.saved_to)
    # Streamed in real time: the call cannot be over before the speech was.
    assert elapsed >= result.speech_s


@pytest.mark.slow
def test_push_to_talk_call_from_a_stereo_wav(server: RunningServer, tmp_path: Path) -> None:
    # 44.1 kHz stereo: the command must convert it to 24 kHz mono before sending.
    mono = np.frombuffer(resample(speech_pcm24k(PIZZA), 24000, 44100), dtype="<i2")
    stereo = np.repeat(mono, 2).tobytes()
    wav = write_wav(tmp_path / "in.wav", stereo, rate=44100, channels=2)
    out = tmp_path / "reply.wav"
    args = ["call", str(wav), "--url", server.ws_url, "--out", str(out)]
    args += ["--turn-detection", "none", "--timeout", "20"]
    # The key comes from the environment, as the bearer token.
    result = CliRunner(env={"VOXGATE_API_KEY": KEY}).invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = result.stdout
    # No server VAD: the command itself committed and asked for the response.
    assert "speech started" not in printed
    assert "[committing it and asking for a response]" in printed
    assert "order" in printed.split("you: ", 1)[1].splitlines()[0], printed
    assert "assistant: " in printed and ": completed" in printed
    assert f"saved to {out}" in printed
    assert_spoken_reply(out)


@pytest.mark.parametrize("key", ["sk-wrong", None])
async def test_wrong_or_missing_api_key_is_refused(
    server: RunningServer, tmp_path: Path, key: str | None
) -> None:
    out = tmp_path / "reply.wav"
    result, _ = await call(text="hello", url=server.ws_url, api_key=key, out=out, timeout_s=20)
    assert result.exit_code == 1
    assert result.error is not None
    assert "refused the API key" in result.error and "invalid_api_key" in result.error
    assert "--api-key" in result.error
    assert not out.exists()


async def test_unreachable_server_says_where_and_what_to_do(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    result, _ = await call(text="hello", url=url, out=tmp_path / "r.wav", timeout_s=5)
    assert result.exit_code == 1
    assert result.error is not None
    assert url in result.error and "voxgate serve" in result.error
    assert not (tmp_path / "r.wav").exists()


# ---------------------------------------------------------------------------------------------
# A scripted server: what exactly goes over the wire
# ---------------------------------------------------------------------------------------------

REPLY_AUDIO = tone(0.5, 24000, hz=300).tobytes()


class ScriptedServer:
    """Confirms the session and records every client event with its arrival time; once it
    has heard ``reply_after_s`` of audio (if set), it plays a canned voice turn and reply."""

    def __init__(self, *, confirm: bool = True, reply_after_s: float | None = None) -> None:
        self.confirm = confirm
        self.reply_after_s = reply_after_s
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.url = ""

    def appended(self) -> list[tuple[float, bytes]]:
        return [
            (at, base64.b64decode(e["audio"]))
            for at, e in self.received
            if e["type"] == "input_audio_buffer.append"
        ]

    async def handle(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {"id": "sess_1"}}))
        heard, replied = 0, False
        async for raw in ws:
            event = json.loads(raw)
            self.received.append((time.monotonic(), event))
            if event["type"] == "session.update" and self.confirm:
                await ws.send(json.dumps({"type": "session.updated", "session": {}}))
            if event["type"] == "input_audio_buffer.append":
                heard += len(base64.b64decode(event["audio"]))
                if self.reply_after_s is not None and not replied:
                    replied = heard >= self.reply_after_s * 48000
                    if replied:
                        for reply in _canned_turn():
                            await ws.send(json.dumps(reply))


def _canned_turn() -> list[dict[str, Any]]:
    ids = {"response_id": "resp_1", "item_id": "item_2"}
    usage = {"total_tokens": 30, "input_tokens": 10, "output_tokens": 20}
    return [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 300, "item_id": "i1"},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1200, "item_id": "i1"},
        {"type": "input_audio_buffer.committed", "item_id": "i1"},
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_audio_transcript.delta", "delta": "Sure, ", **ids},
        {"type": "response.output_audio.delta", "delta": _b64(REPLY_AUDIO[:12000]), **ids},
        {"type": "response.output_audio_transcript.delta", "delta": "one pizza.", **ids},
        {"type": "response.output_audio.delta", "delta": _b64(REPLY_AUDIO[12000:]), **ids},
        {"type": "response.output_audio_transcript.done", "transcript": "Sure, one pizza.", **ids},
        {
            "type": "response.done",
            "response": {"id": "resp_1", "status": "completed", "usage": usage},
        },
        # The transcript of the user's audio may come after the reply; the call waits for it.
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "i1",
            "content_index": 0,
            "transcript": "order a pizza",
        },
    ]


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


@asynccontextmanager
async def scripted(server: ScriptedServer) -> AsyncIterator[ScriptedServer]:
    async with serve(server.handle, "127.0.0.1", 0) as running:
        port = next(iter(running.sockets)).getsockname()[1]
        server.url = f"ws://127.0.0.1:{port}/v1/realtime"
        yield server


@pytest.fixture
async def replying() -> AsyncIterator[ScriptedServer]:
    async with scripted(ScriptedServer(reply_after_s=1.6)) as server:
        yield server


async def test_audio_is_paced_like_a_microphone_then_silence(
    replying: ScriptedServer, tmp_path: Path
) -> None:
    # One second of tone at 16 kHz: the call sends it as 24 kHz, 20 ms at a time, in real time,
    # then silence until the reply (the server replies after 1.6 s of audio).
    wav = write_wav(tmp_path / "tone.wav", tone(1.0, 16000).tobytes(), rate=16000)
    out = tmp_path / "reply.wav"
    result, printed = await call(wav=wav, url=replying.url, out=out, chunk_ms=20)
    assert result.ok, f"{result.error}\n{printed}"

    first = replying.received[0][1]
    assert first["type"] == "session.update"
    audio = first["session"]["audio"]
    assert audio["input"]["turn_detection"] == {"type": "server_vad"}
    assert audio["input"]["transcription"] is not None
    assert (
        audio["input"]["format"]
        == audio["output"]["format"]
        == {
            "type": "audio/pcm",
            "rate": 24000,
        }
    )

    appends = replying.appended()
    assert all(len(chunk) == 960 for _, chunk in appends)  # 20 ms of 24 kHz PCM16
    speech = b"".join(chunk for _, chunk in appends)[:48000]
    assert rms(speech) > 4000  # the tone, converted (its rms is 8000 / sqrt 2)
    assert not any(b"".join(chunk for _, chunk in appends[50:]))  # then silence
    # Paced: the 80th chunk (1.6 s of audio) left about 1.58 s after the first, not at once.
    span = appends[79][0] - appends[0][0]
    assert 1.5 <= span <= 2.5, span
    # Nothing more once the reply and the user's transcript were in.
    assert len(appends) < 80 + 25

    assert result.user_transcripts == ["order a pizza"]
    assert result.assistant_transcript == "Sure, one pizza."
    assert result.reply_audio == REPLY_AUDIO
    assert read_reply(out) == (24000, 1, 2, REPLY_AUDIO)
    assert result.latency_s is not None and 0.4 < result.latency_s < 1.5
    lines = printed.splitlines()
    for expected in [
        "connected: session sess_1",
        "[speech started at 0.30 s]",
        "[speech stopped at 1.20 s]",
        "assistant: Sure, one pizza.",
        "you: order a pizza",
        "reply resp_1: completed",
        "usage: 30 tokens: input 10, output 20",
        f"reply audio: 0.50 s saved to {out}",
    ]:
        assert expected in lines, f"{expected!r} not in:\n{printed}"
    assert lines.index("[speech started at 0.30 s]") < lines.index("reply resp_1: completed")


async def test_quiet_prints_only_what_was_said(replying: ScriptedServer, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "tone.wav", tone(1.0, 24000).tobytes(), rate=24000)
    result, printed = await call(
        wav=wav, url=replying.url, out=tmp_path / "r.wav", verbosity="quiet"
    )
    assert result.ok
    assert printed.splitlines() == ["assistant: Sure, one pizza.", "you: order a pizza"]


async def test_verbose_prints_every_event(replying: ScriptedServer, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "tone.wav", tone(1.0, 24000).tobytes(), rate=24000)
    result, printed = await call(
        wav=wav, url=replying.url, out=tmp_path / "r.wav", verbosity="verbose"
    )
    assert result.ok
    for kind in result.events:
        assert f"< {kind}" in printed
    assert "> session.update" in printed
    assert "< response.output_audio.delta (12000 bytes)" in printed


@pytest.mark.parametrize("confirm", [True, False])
async def test_a_silent_server_times_out_with_a_reason(tmp_path: Path, confirm: bool) -> None:
    wav = write_wav(tmp_path / "tone.wav", tone(0.3, 24000).tobytes(), rate=24000)
    async with scripted(ScriptedServer(confirm=confirm)) as server:
        started = time.monotonic()
        result, _ = await call(wav=wav, url=server.url, out=tmp_path / "r.wav", timeout_s=1)
        elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert result.error is not None
    assert "nothing came back from the server in 1 s" in result.error
    if confirm:
        assert "after the end of your audio" in result.error
        assert "try --turn-detection none" in result.error
        assert 1.3 <= elapsed < 4  # 0.3 s of audio, then 1 s of waiting
    else:
        assert "session.updated" in result.error
        assert 1.0 <= elapsed < 3


async def test_error_event_ends_the_call(tmp_path: Path) -> None:
    async def handle(ws: ServerConnection) -> None:
        await ws.recv()
        error = {"type": "invalid_request_error", "code": "invalid_value", "message": "Nope."}
        await ws.send(json.dumps({"type": "error", "error": error}))
        await ws.wait_closed()

    async with serve(handle, "127.0.0.1", 0) as running:
        url = f"ws://127.0.0.1:{next(iter(running.sockets)).getsockname()[1]}"
        result, _ = await call(text="hello", url=url, out=tmp_path / "r.wav", timeout_s=3)
    assert result.error == "the server sent an error: Nope. [invalid_value]"


@pytest.mark.parametrize(
    ("status", "details", "error"),
    [
        ("failed", {"type": "failed", "error": {"message": "boom"}}, "the reply failed: boom"),
        ("cancelled", {"type": "cancelled"}, "the reply was cancelled (no reason given)"),
        ("completed", None, None),
    ],
)
async def test_push_to_talk_reply_status_decides_the_outcome(
    tmp_path: Path, status: str, details: dict[str, Any] | None, error: str | None
) -> None:
    async def handle(ws: ServerConnection) -> None:
        async for raw in ws:
            kind = json.loads(raw)["type"]
            if kind == "session.update":
                await ws.send(json.dumps({"type": "session.updated", "session": {}}))
            if kind == "response.create":
                done = {"id": "resp_9", "status": status, "status_details": details}
                await ws.send(json.dumps({"type": "response.done", "response": done}))

    wav = write_wav(tmp_path / "tone.wav", tone(0.3, 24000).tobytes(), rate=24000)
    async with serve(handle, "127.0.0.1", 0) as running:
        url = f"ws://127.0.0.1:{next(iter(running.sockets)).getsockname()[1]}"
        result, printed = await call(
            wav=wav, url=url, out=tmp_path / "r.wav", turn_detection="none", timeout_s=3
        )
    assert result.error == error
    assert result.response_status == status
    assert f"reply resp_9: {status}" in printed
    # No audio came back, so there is nothing to save, and the call says so.
    assert "reply audio: none (nothing saved)" in printed and not (tmp_path / "r.wav").exists()


def test_url_takes_the_model_and_http_schemes() -> None:
    assert realtime_url("http://h:1/v1/realtime", None) == "ws://h:1/v1/realtime"
    assert realtime_url("https://h/v1/realtime?model=a&x=1", "b") == (
        "wss://h/v1/realtime?x=1&model=b"
    )


# ---------------------------------------------------------------------------------------------
# WAV input
# ---------------------------------------------------------------------------------------------


def test_wav_of_any_rate_and_channels_becomes_24k_mono(tmp_path: Path) -> None:
    left, right = tone(1.0, 44100, amplitude=8000), tone(1.0, 44100, amplitude=4000)
    stereo = np.stack([left, right], axis=1).tobytes()
    pcm = read_wav(write_wav(tmp_path / "s.wav", stereo, rate=44100, channels=2))
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert abs(len(samples) - 24000) <= 2
    # The channels are averaged (amplitude 6000) and the pitch is kept.
    assert rms(pcm) == pytest.approx(6000 / np.sqrt(2), rel=0.02)
    peak_hz = np.argmax(np.abs(np.fft.rfft(samples))) * 24000 / len(samples)
    assert peak_hz == pytest.approx(440, abs=2)


def test_wav_with_extensible_header_is_read(tmp_path: Path) -> None:
    pcm = tone(0.5, 24000).tobytes()
    guid_pcm = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = (
        (0xFFFE).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + (24000).to_bytes(4, "little")
        + (48000).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + (22).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + (4).to_bytes(4, "little")
        + guid_pcm
    )
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"data" + len(pcm).to_bytes(4, "little") + pcm
    path = tmp_path / "ext.wav"
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    assert read_wav(path) == pcm


def _float_wav(path: Path) -> Path:
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (24000).to_bytes(4, "little")
    fmt += (96000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + bytes(4) + bytes(4)
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


BAD_WAVS = {
    "missing": (lambda p: p / "nope.wav", "no such file"),
    "text": (lambda p: _write(p / "t.wav", b"hello, not audio"), "not a WAV file"),
    "8-bit": (lambda p: write_wav(p / "b.wav", bytes(800), rate=8000, width=1), "8-bit samples"),
    "float": (lambda p: _float_wav(p / "f.wav"), "32-bit float"),
    "empty": (lambda p: write_wav(p / "e.wav", b"", rate=16000), "contains no audio"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_WAVS))
async def test_bad_wav_says_why_before_connecting(tmp_path: Path, case: str) -> None:
    make, reason = BAD_WAVS[case]
    path = make(tmp_path)
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"  # nobody there: the WAV fails first
    result, printed = await call(wav=path, url=url, out=tmp_path / "r.wav")
    assert result.exit_code == 1
    assert result.error is not None and reason in result.error and str(path) in result.error
    assert printed == ""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a WAV file to play, or --text"),
        (["x.wav", "--text", "hi"], "not both"),
        (["--text", "  "], "nothing to say"),
        (["--text", "hi", "-q", "-v"], "--quiet and --verbose"),
        (["--text", "hi", "--timeout", "0"], "--timeout"),
        (["--text", "hi", "--turn-detection", "sometimes"], "sometimes"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["call", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_failures_exit_1_with_the_reason_on_stderr(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    args = ["call", "--text", "hi", "--url", url, "--out", str(tmp_path / "r.wav")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("voxgate call: cannot reach a voxgate server at " + url)
    missing_folder = tmp_path / "no" / "r.wav"
    result = CliRunner().invoke(app, ["call", "--text", "hi", "--out", str(missing_folder)])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
