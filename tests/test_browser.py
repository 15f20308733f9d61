"""The console and a third-party page in a real browser, over WebRTC, in real time.

Chromium's microphone plays a WAV file of spoken English from the moment the page opens it;
what the tests assert is what a user would notice: their words and the assistant's appear,
the assistant is heard (measured with WebAudio on the received track), speaking over it
stops it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

import conftest
from _browser import WAV_RATE, PageLog, StaticSite, chromium, wait_for, write_wav
from _espeak import silence, speak
from conftest import RunningServer, SlowChatServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SENTENCE = "one two three four five"
KEY_WORDS = {"two", "three", "four"}
# The microphone starts when the page opens it, before the call is up: the lead-in silence
# covers connecting. The second utterance starts while the first reply (the built-in
# responder repeats what it heard, ~15 s) is playing, even when a busy machine delays that
# reply by several seconds; the long tail keeps the loop away.
LEAD_S = 3.0
GAP_S = 8.0
TAIL_S = 90.0
STATE = "window.voxgate"


def heard(transcript: str) -> bool:
    return conftest.heard(transcript, KEY_WORDS)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def say_twice_wav(path: Path) -> Path:
    # At a speaking level (-12 dB): espeak's near-full-scale output gets squashed by the
    # browser's automatic gain control, and the recogniser then often mishears it.
    loud = np.frombuffer(speak(SENTENCE, sample_rate=WAV_RATE), dtype=np.int16)
    speech = (loud // 4).tobytes()
    pcm = (
        silence(LEAD_S, sample_rate=WAV_RATE)
        + speech
        + silence(GAP_S, sample_rate=WAV_RATE)
        + speech
        + silence(TAIL_S, sample_rate=WAV_RATE)
    )
    return write_wav(path, pcm)


def sessions(server: RunningServer) -> int:
    url = f"http://127.0.0.1:{server.settings.port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as res:
        return int(json.load(res)["sessions"])


def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server()


def test_console_conversation_with_barge_in(
    server: RunningServer, tmp_path: Path, artifacts: Path
) -> None:
    wav = say_twice_wav(tmp_path / "microphone.wav")
    with chromium(wav) as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        log = PageLog(page)
        page.goto(f"http://127.0.0.1:{server.settings.port}/")
        page.get_by_test_id("connect").click()
        wait_for(page, f"{STATE}.state === 'connected'", 15, "the call to connect", STATE)
        assert page.evaluate(f"{STATE}.callId").startswith("rtc_")
        assert page.evaluate(f"{STATE}.events[0]") == "session.created", log

        # The user's words, then the assistant's, appear in the page as they stream.
        wait_for(
            page,
            "document.querySelector('[data-testid=bubble-user]:not(.pending)')",
            30,
            "the user's transcript",
            STATE,
        )
        said = page.get_by_test_id("bubble-user").first.inner_text()
        assert heard(said), said
        wait_for(
            page,
            f"{STATE}.assistantTranscripts.some((t) => t.length > 10)",
            30,
            "the assistant's transcript",
            STATE,
        )
        # ... and the assistant is heard: its audio reaches the page's WebAudio graph.
        wait_for(page, f"{STATE}.assistantAudioMs > 800", 30, "assistant audio", STATE)
        page.screenshot(path=str(artifacts / "console.png"))
        [latency] = page.evaluate(f"{STATE}.latenciesMs")[:1]
        assert 0 < latency < 10_000
        assert "ms" in page.get_by_test_id("latency").inner_text()

        # Speaking again over the reply stops it: the server says so, and it goes quiet. (The
        # reply may be done generating long before it has played: response.done comes at the
        # end of generation, so the cut is output_audio_buffer.cleared.)
        wait_for(
            page,
            f"{STATE}.events.includes('output_audio_buffer.cleared')",
            30,
            "the reply to be cut short",
            STATE,
        )
        started = page.evaluate(
            f"{STATE}.events.filter((t) => t === 'output_audio_buffer.started')"
        )
        assert len(started) == 1, "the second reply began before the first was seen cut"
        cut_at = page.evaluate(f"{STATE}.lastEventAt['output_audio_buffer.cleared']")
        # Longer than any pause inside a spoken reply; shorter than the rest of the user's
        # sentence plus the end-of-turn silence, after which the next reply may begin.
        wait_for(
            page,
            f"performance.now() - {STATE}.lastAudibleAt > 800",
            5,
            "the assistant to fall silent",
            STATE,
        )
        # What the browser had buffered before the cut still plays: a few hundred ms, more
        # on a busy machine. The uncut reply would have gone on for many seconds.
        assert page.evaluate(f"{STATE}.lastAudibleAt") - cut_at < 2000
        wait_for(
            page,
            "document.querySelector('[data-testid=bubble-assistant].cut')",
            10,
            "the interrupted reply to be marked",
            STATE,
        )
        # The built-in responder repeats what it heard. Each text shows once: final texts
        # replace what streamed before them rather than adding to it.
        reply = page.get_by_test_id("bubble-assistant").first.inner_text()
        assert reply.count(said) == 1 and reply.count("You said") == 1, (said, reply)
        # The cancelled response's usage is counted and priced.
        wait_for(page, f"{STATE}.usage.total_tokens > 0", 10, "usage", STATE)
        assert "estimate" in page.get_by_test_id("cost").inner_text()
        assert not page.evaluate(f"{STATE}.errors"), log

        page.get_by_test_id("hangup").click()
        wait_for(page, f"{STATE}.state === 'ended'", 10, "the call to end", STATE)
        assert page.get_by_test_id("message").inner_text() == "Call ended."
        eventually(lambda: sessions(server) == 0, 10, "the server to end the session")


@pytest.fixture
def other_origin() -> Iterator[StaticSite]:
    site = StaticSite(Path(__file__).parent / "web")
    yield site
    site.stop()


THIRD_PARTY = "window.thirdParty"


@pytest.fixture
def short_answers() -> Iterator[SlowChatServer]:
    """An LLM that answers in one sentence: the built-in responder's answer takes ~15 s
    to play."""
    answer = "Your table for two people is booked for tonight at eight."
    llm = SlowChatServer(delay_s=0.01, script=[({"content": answer}, "stop")])
    yield llm
    llm.stop()


def test_third_party_page_on_another_origin(
    start_server: Callable[..., RunningServer],
    short_answers: SlowChatServer,
    other_origin: StaticSite,
    tmp_path: Path,
) -> None:
    server = start_server(llm_base_url=short_answers.url, llm_model="m")
    # A silent microphone, so that only the typed turn gets an answer.
    wav = write_wav(tmp_path / "silence.wav", silence(5, sample_rate=WAV_RATE))
    query = urlencode({"server": server.base_url, "key": "sk-anything"})
    with chromium(wav) as browser:
        page = browser.new_page()
        log = PageLog(page)
        page.goto(other_origin.url(f"third_party.html?{query}"))
        wait_for(page, f"{THIRD_PARTY}.status !== 'starting'", 15, "the answer", THIRD_PARTY)
        # CORS let the page POST the offer and read Location.
        assert page.evaluate(f"{THIRD_PARTY}.error") is None, log
        assert page.evaluate(f"{THIRD_PARTY}.callId").startswith("rtc_")
        wait_for(
            page, f"{THIRD_PARTY}.events.length > 0", 15, "the first server event", THIRD_PARTY
        )
        assert page.evaluate(f"{THIRD_PARTY}.events[0]") == "session.created"

        page.evaluate(
            """() => {
                const {send} = window.thirdParty;
                send({type: "conversation.item.create", item: {type: "message", role: "user",
                      content: [{type: "input_text", text: "book a table for two people"}]}});
                send({type: "response.create"});
            }"""
        )
        wait_for(page, f"{THIRD_PARTY}.responses.length > 0", 30, "response.done", THIRD_PARTY)
        assert page.evaluate(f"{THIRD_PARTY}.responses[0].status") == "completed"
        wait_for(page, f"{THIRD_PARTY}.audioMs > 800", 30, "audible reply audio", THIRD_PARTY)


def test_console_explains_a_refused_microphone(server: RunningServer) -> None:
    with chromium(grant_microphone=False) as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.settings.port}/")
        page.get_by_test_id("connect").click()
        wait_for(page, f"{STATE}.errors.length > 0", 15, "an error message", STATE)
        message = page.get_by_test_id("message")
        assert message.is_visible()
        assert "Microphone access was refused" in message.inner_text()
        assert page.get_by_test_id("connect").is_enabled()  # the user can try again
        assert sessions(server) == 0


def test_console_explains_a_refused_key(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(api_keys=["the-right-key"])
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.settings.port}/")
        page.get_by_test_id("api-key").fill("a-wrong-key")
        page.get_by_test_id("connect").click()
        wait_for(page, f"{STATE}.errors.length > 0", 15, "an error message", STATE)
        # The server's own error.message, from its JSON error body.
        text = page.get_by_test_id("message").inner_text()
        assert "401" in text and "Incorrect API key" in text, text
        assert page.evaluate(f"{STATE}.state") == "ended"

        # The key is kept for the next visit; the right one connects.
        page.reload()
        assert page.get_by_test_id("api-key").input_value() == "a-wrong-key"
        page.get_by_test_id("api-key").fill("the-right-key")
        page.get_by_test_id("api-key").press("Enter")
        wait_for(page, f"{STATE}.state === 'connected'", 15, "the call to connect", STATE)
        assert page.get_by_test_id("message").is_hidden()
        page.get_by_test_id("hangup").click()
        wait_for(page, f"{STATE}.state === 'ended'", 10, "the call to end", STATE)
