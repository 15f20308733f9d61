"""``voxgate usage``: the usage ledger from a shell, read from the server's store directly
(the same settings as ``serve``), like ``GET /v1/admin/usage``."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from .cli_controls import _settings
from .server.ledger_routes import parse_time, to_csv
from .server.refusal import Refused
from .storage.db import create_engine, upgrade
from .storage.ledger_queries import GroupBy, LedgerQueries

CONFIG = typer.Option(None, "--config", help="TOML config file (also VOXGATE_CONFIG).")
TABLE_COLUMNS = (
    ("group", "{}"),
    ("responses", "{:d}"),
    ("input_tokens", "{:d}"),
    ("output_tokens", "{:d}"),
    ("audio_seconds_in", "{:.1f}"),
    ("audio_seconds_out", "{:.1f}"),
    ("cost_usd", "{:.4f}"),
)


class Group(StrEnum):
    session = "session"
    key = "key"
    tenant = "tenant"
    user = "user"
    model = "model"
    day = "day"


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def usage(
    group_by: Group = typer.Option(Group.day, "--group-by", help="What each line totals."),
    since: str | None = typer.Option(None, help="From this date or time (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, help="Up to (not including) this date or time."),
    format: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
    config: Path | None = CONFIG,
) -> None:
    """Print usage and cost from the ledger, grouped."""
    settings = _settings(config)
    try:
        start, end = parse_time(since, "--since"), parse_time(until, "--until")
    except Refused as exc:
        typer.echo(f"voxgate: {exc.message}", err=True)
        raise typer.Exit(2) from None

    async def read() -> list[dict[str, Any]]:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            group: GroupBy = group_by.value
            return await LedgerQueries(engine).usage_report(group, start, end)
        finally:
            await engine.dispose()

    rows = asyncio.run(read())
    if format is Format.json:
        typer.echo(json.dumps({"object": "list", "group_by": group_by.value, "data": rows}))
    elif format is Format.csv:
        typer.echo(to_csv(rows), nl=False)
    else:
        typer.echo(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[name for name, _ in TABLE_COLUMNS]]
    for row in rows:
        cells.append(
            [fmt.format(row[name] if row[name] is not None else "-") for name, fmt in TABLE_COLUMNS]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )
