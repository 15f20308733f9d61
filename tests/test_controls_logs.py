"""No key, client secret or raw safety identifier in any log line of a session that mints,
connects, talks and is revoked (all loggers, at DEBUG)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from _controls import ADMIN_KEY, MODEL, Admin, client, keyed_server, next_event

USER = "alice.private@example.com"
LOGGERS = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "voxgate", "websockets"]
# The test's own clients log the headers they send at DEBUG; the server's lines are the point.
CLIENT_LOGGERS = ("websockets.client", "httpx", "httpcore", "openai")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_no_credential_or_user_in_any_log_line(
    start_server: Any, database_url: str, captured: Capture
) -> None:
    server = keyed_server(start_server, database_url)
    for name in LOGGERS:  # the server configured its loggers when it started
        logging.getLogger(name).setLevel(logging.DEBUG)
    admin = Admin(server)
    key = await admin.create_key(scopes=["realtime", "client_secrets"])
    async with client(server, key["key"], user=USER) as c:
        raw = await c.realtime.client_secrets.with_raw_response.create(
            session={"type": "realtime", "instructions": "Be brief."}
        )
        secret, secret_id = raw.parse().value, raw.headers["x-voxgate-client-secret-id"]
    async with client(server, secret) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).type == "session.created"
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi"}],
            }
        )
        await conn.response.create()
        while (event := await next_event(conn)).type != "response.done":
            assert event.type != "error", event
        await admin.http.delete(f"/admin/client_secrets/{secret_id}")
        ended = await next_event(conn, timeout_s=10)
        assert ended.error.code == "client_secret_revoked"
    # A refused attempt with each credential is logged too.
    async with client(server, secret) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).error.code == "client_secret_revoked"
    await admin.http.delete(f"/admin/keys/{key['id']}")
    async with client(server, key["key"], user=USER) as c, c.realtime.connect(model=MODEL) as conn:
        assert (await next_event(conn)).error.code == "api_key_revoked"
    audit = (await admin.http.get("/admin/audit")).text
    await admin.aclose()

    logged = "\n".join(captured.lines)
    assert "admitted session" in logged  # the capture did see the server's lines
    for credential in (key["key"], secret, ADMIN_KEY, USER):
        assert credential not in logged
        assert credential not in audit
        assert credential[:-4] not in logged  # nor most of one
