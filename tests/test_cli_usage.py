"""``voxgate usage`` reads the ledger on the server's store: grouped by day since a date, as a
table, JSON or CSV; a bad date is refused with a message."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from voxgate.control.ledger import SessionInfo
from voxgate.control.usage import UsageRecord
from voxgate.storage.db import create_engine, upgrade
from voxgate.storage.ledger import LedgerRepository

VOXGATE = str(Path(sys.executable).with_name("voxgate"))
OCT_31 = datetime(2026, 10, 31, 12, tzinfo=UTC).timestamp()
NOV_2 = datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()


async def seed(url: str) -> None:
    await upgrade(url)
    engine = create_engine(url)
    repo = LedgerRepository(engine)
    info = SessionInfo(
        "sess_1", "key_1", None, None, "gpt-realtime", "embedded", "websocket", OCT_31
    )
    base = UsageRecord(
        "sess_1", None, "response", "key_1", None, None, "gpt-realtime", "embedded", 0
    )
    for n, at in enumerate((OCT_31, NOV_2, NOV_2)):
        row = replace(base, response_id=f"resp_{n}", at=at, input_text_tokens=10, cost_usd=0.25)
        await repo.record_usage(info, row)
    await engine.dispose()


def usage(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOXGATE_DATABASE_URL": url}
    return subprocess.run([VOXGATE, "usage", *args], env=env, capture_output=True, text=True)


def test_usage_by_day_since_a_date_in_every_format(database_url: str) -> None:
    asyncio.run(seed(database_url))
    as_json = usage(database_url, "--group-by", "day", "--since", "2026-11-01", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    [day] = json.loads(as_json.stdout)["data"]
    assert (day["group"], day["responses"], day["cost_usd"]) == ("2026-11-02", 2, 0.5)
    table = usage(database_url, "--group-by", "day", "--since", "2026-11-01").stdout.splitlines()
    assert table[0].split()[:2] == ["group", "responses"]
    assert table[1].split() == ["2026-11-02", "2", "20", "0", "0.0", "0.0", "0.5000"]
    rows = list(csv.DictReader(io.StringIO(usage(database_url, "--format", "csv").stdout)))
    assert [r["group"] for r in rows] == ["2026-10-31", "2026-11-02"]


def test_a_bad_date_is_refused(database_url: str) -> None:
    result = usage(database_url, "--since", "yesterday")
    assert result.returncode == 2
    assert "ISO 8601" in result.stderr
