"""The console with production controls, in a real browser: it takes an API key or a client
secret, and says when a session was refused or ended by a limit, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from _browser import chromium, wait_for
from _controls import ADMIN_KEY, keyed_server

pytestmark = pytest.mark.slow
STATE = "window.voxgate"


def admin_post(server: Any, path: str, body: dict[str, Any], key: str = ADMIN_KEY) -> Any:
    response = httpx.post(
        f"{server.base_url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def open_console(browser: Any, server: Any, credential: str) -> Any:
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.settings.port}/")
    page.get_by_test_id("api-key").fill(credential)
    page.get_by_test_id("connect").click()
    return page


def test_console_shows_a_refusal_and_a_limit_with_the_reason(
    start_server: Callable[..., Any], database_url: str
) -> None:
    server = keyed_server(start_server, database_url)
    refused = admin_post(server, "/admin/keys", {"name": "c", "policy": {"allowed_models": ["x"]}})
    limited = admin_post(server, "/admin/keys", {"name": "c", "policy": {"max_session_seconds": 3}})
    with chromium() as browser:
        page = open_console(browser, server, refused["key"])
        wait_for(page, f"{STATE}.errors.length > 0", 15, "the refusal", STATE)
        text = page.get_by_test_id("message").inner_text()
        assert "403" in text and "model_not_allowed" in text, text
        assert page.evaluate(f"{STATE}.state") == "ended"

        page = open_console(browser, server, limited["key"])
        wait_for(page, f"{STATE}.state === 'connected'", 15, "the call to connect", STATE)
        wait_for(page, f"{STATE}.state === 'ended'", 20, "the limit to end the call", STATE)
        assert page.evaluate(f"{STATE}.endReason") == "session_duration_exceeded"
        text = page.get_by_test_id("message").inner_text()
        assert "maximum duration" in text and "session_duration_exceeded" in text, text


def test_console_connects_with_a_client_secret_and_does_not_keep_it(
    start_server: Callable[..., Any], database_url: str
) -> None:
    server = keyed_server(start_server, database_url)
    minted = admin_post(
        server,
        "/realtime/client_secrets",
        {"session": {"type": "realtime", "instructions": "Fixed by the backend."}},
    )
    with chromium() as browser:
        page = open_console(browser, server, minted["value"])
        wait_for(page, f"{STATE}.state === 'connected'", 15, "the call to connect", STATE)
        # session.created may come a moment after the data channel opens; the notice
        # follows it and must then stay (the peer connecting later does not clear it).
        notice = "document.querySelector('[data-testid=message]').textContent"
        wait_for(page, f"{notice}.includes('client secret')", 10, "the notice", STATE)
        wait_for(page, f"{STATE}.peerState === 'connected'", 10, "the peer to connect", STATE)
        assert "client secret" in page.get_by_test_id("message").inner_text()
        # The console sent no settings of its own, so nothing was refused as bound.
        assert "bound_by_client_secret" not in page.evaluate(f"{STATE}.errorCodes")
        assert page.evaluate("localStorage.getItem('voxgate.apiKey')") != minted["value"]
        page.get_by_test_id("hangup").click()
        wait_for(page, f"{STATE}.state === 'ended'", 10, "the call to end", STATE)
