"""Helpers for the browser tests: Debian's Chromium driven by Playwright, with a WAV file as
its microphone, and a static file server that gives pages another origin."""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
import wave
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import require

CHROMIUM = "/usr/bin/chromium"
# Chromium's fake capture device reads WAV files at any rate, but 48 kHz mono PCM16 is what
# its audio pipeline runs at, so nothing is resampled on the way in.
WAV_RATE = 48000


def write_wav(path: Path, pcm: bytes, rate: int = WAV_RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


@contextlib.contextmanager
def chromium(microphone_wav: Path | None = None, *, grant_microphone: bool = True) -> Iterator[Any]:
    """A headless Chromium whose microphone plays ``microphone_wav`` (in a loop, from the
    moment a page opens it; Chromium's beeps when None). Pages get the microphone without
    asking, or, with ``grant_microphone=False``, are refused it as if the user said no."""
    require(shutil.which(CHROMIUM) is not None, f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed")
        raise
    args = [
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
        # Offer real host addresses rather than mDNS names the server would have to resolve.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav}")
    if grant_microphone:
        args.append("--use-fake-ui-for-media-stream")  # else headless denies the prompt
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            browser.close()


class PageLog:
    """The page's console output and uncaught errors, for failure messages."""

    def __init__(self, page: Any) -> None:
        self.lines: list[str] = []
        page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))

    def __str__(self) -> str:
        return "\n".join(self.lines[-40:]) or "(nothing logged)"


def wait_for(page: Any, condition: str, timeout_s: float, what: str, state: str) -> None:
    """Wait until the JavaScript ``condition`` holds; on timeout fail with ``what`` and the
    page's ``state`` expression (its live stats), so the failure says what the page saw."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        seen = page.evaluate(
            f"(() => {{ const s = {{...{state}}}; s.events = s.events?.slice(-60);"
            " return JSON.stringify(s); })()"
        )
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what}; page: {seen}"
        ) from None


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticSite:
    """Serves a directory over HTTP on its own port: a different origin from voxgate's."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
