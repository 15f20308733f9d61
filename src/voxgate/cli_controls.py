"""``voxgate keys|tenants|secrets|audit|db``: the controls from a shell, on the server's store
directly (the same settings as ``serve``), so the first admin key exists before the server
starts. A running server sees the changes: revocations end live sessions within a poll of the
store's change stamp; policy changes apply to the next admission."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer

from .control.audit import AuditRecord
from .settings import Settings, SettingsError, load_settings
from .storage.admin import Admin, AdminError
from .storage.audit import AuditRepository
from .storage.db import create_engine, upgrade
from .storage.keys import KeyRepository

T = TypeVar("T")
CONFIG = typer.Option(None, "--config", help="TOML config file (also VOXGATE_CONFIG).")

keys_app = typer.Typer(help="API keys: create, list, update, revoke.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenant policies.", no_args_is_help=True)
secrets_app = typer.Typer(help="Client secrets.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)


def _settings(config: Path | None) -> Settings:
    try:
        # The store is all these commands touch: skip the listening-address check.
        return load_settings(config, check_exposure=False)
    except (SettingsError, ValueError) as exc:
        typer.echo(f"voxgate: {exc}", err=True)
        raise typer.Exit(2) from None


class _Collect:
    """Audit records of one command, written before it exits."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, rec: AuditRecord) -> None:
        self.records.append(rec)


def _run(config: Path | None, action: Callable[[Admin], Awaitable[T]]) -> T:
    settings = _settings(config)

    async def main() -> T:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        sink = _Collect()
        try:
            result = await action(Admin(engine, sink))
            await AuditRepository(engine).write(sink.records)
            return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except AdminError as exc:
        typer.echo(f"voxgate: {exc.message}", err=True)
        raise typer.Exit(1 if exc.status == 404 else 2) from None


def _json_arg(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        typer.echo(f"voxgate: {name} is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from None


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., help="What the key is for."),
    tenant: str | None = typer.Option(None, help="The tenant the key belongs to."),
    scopes: str = typer.Option("realtime", help="Comma-separated: realtime,client_secrets,admin."),
    policy: str | None = typer.Option(None, help="Policy as JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print the key as JSON."),
    config: Path | None = CONFIG,
) -> None:
    """Create a key; prints it (alone, on the last line) — the only time it is shown."""
    policy_value = _json_arg(policy, "--policy")
    key, value = _run(
        config,
        lambda admin: admin.create_key(
            name=name, tenant=tenant, scopes=scopes, policy=policy_value, actor="cli"
        ),
    )
    if as_json:
        shown = key.to_json()
        typer.echo(
            json.dumps(
                {
                    "id": key.id,
                    "key": value,
                    "name": key.name,
                    "tenant": key.tenant,
                    "scopes": shown["scopes"],
                    "policy": shown["policy"],
                }
            )
        )
        return
    typer.echo(f"created {key.id} ({key.name}, scopes {','.join(sorted(key.scopes))})")
    typer.echo(value)


@keys_app.command("list")
def keys_list(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config: Path | None = CONFIG,
) -> None:
    """List keys (prefixes only; keys are stored hashed)."""
    keys = _run(config, lambda admin: admin.keys.list())
    if as_json:
        typer.echo(json.dumps({"data": [k.to_json() for k in keys]}))
        return
    for k in keys:
        state = "revoked" if k.revoked_at is not None else "active"
        policy = json.dumps(k.policy.to_json()) if k.policy.to_json() else "-"
        typer.echo(
            f"{k.id}\t{k.prefix}\t{k.name}\t{k.tenant or '-'}\t{','.join(sorted(k.scopes))}"
            f"\t{state}\t{policy}"
        )


@keys_app.command("update")
def keys_update(
    key_id: str = typer.Argument(..., metavar="ID"),
    policy: str | None = typer.Option(None, help="New policy as JSON (replaces the old one)."),
    scopes: str | None = typer.Option(None, help="New comma-separated scopes."),
    config: Path | None = CONFIG,
) -> None:
    """Change a key's policy and/or scopes."""
    policy_value = _json_arg(policy, "--policy")
    key = _run(
        config,
        lambda admin: admin.update_key(key_id, policy=policy_value, scopes=scopes, actor="cli"),
    )
    typer.echo(json.dumps(key.to_json()))


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., metavar="ID"), config: Path | None = CONFIG
) -> None:
    """Revoke a key: it opens nothing more, and its live sessions end."""
    key = _run(config, lambda admin: admin.revoke_key(key_id, actor="cli"))
    typer.echo(f"revoked {key.id}")


@tenants_app.command("set")
def tenants_set(
    tenant: str = typer.Argument(...),
    policy: str = typer.Option(..., help="The tenant's policy as JSON."),
    config: Path | None = CONFIG,
) -> None:
    """Set a tenant's policy (applies to every key of the tenant)."""
    policy_value = _json_arg(policy, "--policy")
    result = _run(config, lambda admin: admin.set_tenant(tenant, policy_value, actor="cli"))
    typer.echo(json.dumps({"tenant": tenant, "policy": result.to_json()}))


@secrets_app.command("revoke")
def secrets_revoke(
    secret_id: str = typer.Argument(..., metavar="ID"), config: Path | None = CONFIG
) -> None:
    """Revoke a client secret (its id: the X-Voxgate-Client-Secret-Id header, or the audit
    log); sessions opened with it end."""
    secret = _run(config, lambda admin: admin.revoke_secret(secret_id, actor="cli"))
    typer.echo(f"revoked {secret.id}")


def audit(
    since: str | None = typer.Option(None, help="Start date or time (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, help="End date or time (ISO 8601, UTC)."),
    action: str | None = typer.Option(None, help="Only this action (e.g. admission)."),
    key_id: str | None = typer.Option(None, "--key", help="Only records of this key id."),
    limit: int = typer.Option(1000, min=1, max=100_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    config: Path | None = CONFIG,
) -> None:
    """Print the audit log."""
    start, end = _time(since, "--since"), _time(until, "--until")
    rows = _run(
        config,
        lambda admin: AuditRepository(admin.engine).query(
            start_time=start, end_time=end, action=action, key_id=key_id, limit=limit
        ),
    )
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row))
            continue
        at = datetime.fromtimestamp(row["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(
            f"{at}\t{row['action']}\t{row['code'] or 'ok'}\tkey={row['key_id'] or '-'}"
            f"\ttenant={row['tenant'] or '-'}\tsession={row['session_id'] or '-'}"
            f"\t{json.dumps(row['detail'])}"
        )


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"voxgate: {name} must be a date or time like 2026-11-01", err=True)
        raise typer.Exit(2) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@db_app.command("upgrade")
def db_upgrade(config: Path | None = CONFIG) -> None:
    """Apply the database migrations (the server also does this when it starts)."""
    settings = _settings(config)
    asyncio.run(upgrade(settings.database_url))
    typer.echo("database is up to date")


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback in development mode (no key of any kind)."""
    if settings.loopback or settings.api_keys:
        return

    async def count() -> int:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await KeyRepository(engine).count()
        finally:
            await engine.dispose()

    if asyncio.run(count()) == 0:
        raise SettingsError(
            f"refusing to listen on {settings.host} without API keys: development mode (any "
            "key accepted) is only allowed on loopback. Create a key (voxgate keys create "
            "--name admin --scopes realtime,client_secrets,admin), set VOXGATE_API_KEYS, or "
            "listen on 127.0.0.1."
        )


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(db_app, name="db")
    app.command("audit")(audit)
