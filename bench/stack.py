"""One benchmark run's throwaway stack: its database, its Redis keys, its server processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncpg
import redis

STARTUP_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 10
# What each process of `m2m serve` (and of the baseline) logs once it serves.
READY_LINE = "Application startup complete."


# --- PostgreSQL ------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    assert name.replace("_", "").isalnum(), name  # our own generated names only
    return f'"{name}"'


async def _execute(dsn: str, statement: str, *args: object) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.execute(statement, *args))
    finally:
        await connection.close()


def create_database(admin_dsn: str, name: str) -> None:
    asyncio.run(_execute(f"{admin_dsn}/postgres", f"CREATE DATABASE {_quoted(name)}"))


def drop_database(admin_dsn: str, name: str) -> None:
    statement = f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)"
    asyncio.run(_execute(f"{admin_dsn}/postgres", statement))


SEED_ACCESS_TOKENS = """
INSERT INTO access_tokens
    (id, tenant_id, user_id, created_by_user_id, description, expires_at, created_at, signing_kid)
SELECT gen_random_uuid()::text, $1, NULL, NULL, 'bench token ' || n, NULL, now(), NULL
FROM generate_series(1, $2::int) AS n
"""


def seed_access_tokens(admin_dsn: str, database: str, tenant_id: str, count: int) -> None:
    """Insert `count` never-expiring tenant access tokens in one statement (for `/active`)."""

    async def seed() -> None:
        connection = await asyncpg.connect(f"{admin_dsn}/{database}")
        try:
            await connection.execute(SEED_ACCESS_TOKENS, tenant_id, count)
            await connection.execute("ANALYZE access_tokens")
        finally:
            await connection.close()

    asyncio.run(seed())


# --- Redis -----------------------------------------------------------------------------------


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete this run's keys, and only them (never FLUSHALL: the instance may be shared)."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


# --- server processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerFailed(Exception):
    def __init__(self, name: str, log_tail: str) -> None:
        super().__init__(f"{name} did not start; the end of its log:\n{log_tail}")
        self.log_tail = log_tail


class Server:
    """A server in its own process group, so that stopping it stops its workers too; started
    once each of its processes has logged `ready_line`."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        ready_line: str = READY_LINE,
    ) -> None:
        self.name = name
        self._ready_line = ready_line
        self._command = command
        self._env = env
        self._cwd = cwd
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int) -> None:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while self.log_text().count(self._ready_line) < workers:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(self.name, self.log_tail())
            time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        """The server's first process (its workers are its descendants), while it runs."""
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # Signal the whole group: workers can outlive a parent that died.
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _signal_group(process.pid, 0) and time.monotonic() < deadline:
            process.poll()  # reap the parent as soon as it exits
            time.sleep(0.1)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True
