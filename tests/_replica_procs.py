"""Two `voxgate serve` processes sharing one PostgreSQL database and one Redis, as a deployment
runs them: the harness for the multi-replica tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from _shared_state import REDIS_URL, require_redis
from conftest import free_port, require

SRC = str(Path(__file__).resolve().parents[1] / "src")
PG_BASE = os.environ.get(
    "VOXGATE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def _pg_admin_dsn() -> str:
    from sqlalchemy.engine import make_url

    url = make_url(PG_BASE)
    return url.set(drivername="postgresql", database=url.database or "postgres").render_as_string(
        hide_password=False
    )


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_admin_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_reachable() -> bool:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
        return True
    except Exception:
        return False


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new PostgreSQL database for one run (dropped afterwards); its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    require(_pg_reachable(), f"PostgreSQL at {PG_BASE} (set VOXGATE_TEST_DATABASE_URL)")
    name = f"voxgate_replicas_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_BASE).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def voxgate_cli(args: list[str], env: dict[str, str]) -> str:
    """Run a `voxgate` command as an operator would (only the given settings); its stdout."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    inherited["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", "from voxgate.cli import main; main()", *args],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"voxgate {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class Replica:
    """One `voxgate serve` process; its log goes to a file the failure message points at."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"replica-{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        # Only the settings given here: none of the calling shell's VOXGATE_* leak in.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
        full_env = {
            **inherited,
            **env,
            "VOXGATE_PORT": str(self.port),
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.process = subprocess.Popen(  # ended by stop() or kill(), by its PID
            [sys.executable, "-c", "from voxgate.cli import main; main()", "serve"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_ready(self, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"replica {self.name} did not start; see {self.log_path}")

    def kill(self) -> None:
        """Die as a crash would: no shutdown, nothing given back."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class ReplicaSet:
    """Replicas on one database and one Redis prefix; `start` adds one more."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Replica] = []

    def start(self, name: str) -> Replica:
        replica = Replica(name, self.env, self.log_dir)
        self.started.append(replica)
        replica.wait_ready()
        return replica

    def stop_all(self) -> None:
        for replica in self.started:
            replica.stop()


@contextlib.contextmanager
def replica_set(database_url: str, log_dir: Path) -> Iterator[ReplicaSet]:
    """A set of replicas sharing one database and a fresh Redis prefix (deleted afterwards)."""
    from _shared_state import delete_prefix, random_prefix

    require_redis()
    prefix = random_prefix()
    env = {
        "VOXGATE_DATABASE_URL": database_url,
        "VOXGATE_REDIS_URL": REDIS_URL,
        "VOXGATE_REDIS_PREFIX": prefix,
        "VOXGATE_STT_WORKERS": "1",
        "VOXGATE_DATA_DIR": str(log_dir / "data"),
        "VOXGATE_LOG_LEVEL": "info",
    }
    replicas = ReplicaSet(env, log_dir)
    try:
        yield replicas
    finally:
        replicas.stop_all()
        asyncio.run(delete_prefix(prefix))
