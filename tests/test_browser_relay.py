"""The console in a real browser, talking to a model that an upstream serves (a second
voxgate process): relayed (media through voxgate) and direct (media straight to the
upstream). Either way the call connects, a typed turn is answered aloud, the console shows
which model serves it, and hanging up ends the call on both servers."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _browser import WAV_RATE, PageLog, chromium, wait_for, write_wav
from _espeak import silence
from _upstream import UpstreamVoxgate, upstream_voxgate
from conftest import RunningServer

pytestmark = pytest.mark.slow
STATE = "window.voxgate"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamVoxgate]:
    with upstream_voxgate(tmp_path_factory.mktemp("browser-relay")) as running:
        yield running


def live_sessions(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as res:
        return int(json.load(res)["sessions"])


@pytest.mark.parametrize("direct", [False, True], ids=["relayed", "direct"])
def test_console_on_an_upstream_model(
    start_server: Callable[..., RunningServer],
    upstream: UpstreamVoxgate,
    tmp_path: Path,
    direct: bool,
) -> None:
    server = start_server(
        upstreams=[upstream.setting("hosted", models=["gpt-realtime*"], direct=direct)]
    )
    # A silent microphone, so that only the typed turn gets an answer.
    wav = write_wav(tmp_path / "silence.wav", silence(5, sample_rate=WAV_RATE))
    with chromium(wav) as browser:
        page = browser.new_page()
        log = PageLog(page)
        page.goto(f"http://127.0.0.1:{server.settings.port}/")
        page.get_by_test_id("connect").click()
        wait_for(page, f"{STATE}.state === 'connected'", 20, "the call to connect", STATE)
        wait_for(page, f"{STATE}.model !== null", 10, "session.created", STATE)
        assert page.get_by_test_id("model").inner_text() == "gpt-realtime"
        assert live_sessions(server.settings.port) == 1
        assert live_sessions(upstream.port) == 1
        page.get_by_test_id("text-input").fill("Hello through the upstream")
        page.get_by_test_id("send-text").click()
        wait_for(
            page,
            f"{STATE}.assistantTranscripts.some((t) => t.length > 10)",
            30,
            "the assistant's transcript",
            STATE,
        )
        wait_for(page, f"{STATE}.assistantAudioMs > 800", 30, "assistant audio", STATE)
        assert not page.evaluate(f"{STATE}.errors"), log

        # The console hangs up through voxgate, which ends the upstream's call too.
        page.get_by_test_id("hangup").click()
        wait_for(page, f"{STATE}.state === 'ended'", 10, "the call to end", STATE)
    for port in (server.settings.port, upstream.port):
        ended_within(port, 10.0)


def ended_within(port: int, timeout_s: float) -> None:
    """Until the server on ``port`` has no live session (another process ends it in its own
    time: there is no event to wait for), or fail."""
    deadline = time.monotonic() + timeout_s
    while live_sessions(port):
        assert time.monotonic() < deadline, f"a session on port {port} is still live"
        time.sleep(0.05)
