"""Processes a test starts (`m2m serve`, a redis-server or a PostgreSQL cluster of its own), the
ports they listen on and the environment they run under.

A test that starts one is marked `processes` (conftest marks those using its fixtures), so
`pytest -m "not processes"` starts none.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.app import REDIS_TIMEOUT_SECONDS
from api.state import Services
from domain.settings import Settings


def serve_environment(settings: Settings) -> dict[str, str]:
    """The M2M_* environment under which a `m2m serve` process shares this run's stores."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}
    master = base64.urlsafe_b64encode(settings.master_key).decode().rstrip("=")
    return {
        **clean,
        "M2M_DATABASE_URL": settings.database_url,
        "M2M_REDIS_URL": settings.redis_url,
        "M2M_REDIS_PREFIX": settings.redis_prefix,
        "M2M_VENDOR_CLIENT_ID": settings.vendor_client_id,
        "M2M_VENDOR_SECRET": settings.vendor_secret,
        "M2M_MASTER_KEY": master,
        "M2M_ISSUER": settings.issuer,
        "M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE": str(settings.event_endpoints_allow_private).lower(),
        # No M2M_ARGON2_*: a process hashes with the production defaults (the settings refuse
        # the suite's cheap ones); it verifies hashes made by the test app all the same.
    }


def run_m2m(
    args: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`m2m ARGS` run to its end under exactly `env`; the process and its children are killed
    (and the test fails) if it runs longer than `timeout` seconds."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        command = " ".join(args)
        raise AssertionError(f"m2m {command} still ran after {timeout} s:\n{stderr}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(
    settings: Settings, *, cwd: str | None = None, log: Path | None = None, **extra_env: str
) -> Iterator[str]:
    """A real `m2m serve` subprocess on a free port (started in `cwd`); yields its base URL,
    stops it after. Its log goes to `log` when given (a server answering many requests would
    fill a pipe nobody reads), else to a pipe read if it fails to start."""
    port = free_port()
    log_file = log.open("wb") if log is not None else None
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port)],
        env={**serve_environment(settings), **extra_env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=log_file if log_file is not None else subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                said = log.read_bytes() if log is not None else process.stderr.read()
                raise RuntimeError(f"m2m serve exited: {said.decode()[-2000:]}")
            try:
                httpx.get(f"{base}/.well-known/jwks.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("m2m serve did not answer within 30 s") from None
                time.sleep(0.05)  # waiting for a process to boot, not for a behaviour
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_file is not None:
            log_file.close()


# --- private Redis ----------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own, which it may flush, pause, kill and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
                # DEBUG SLEEP makes it slow rather than down (Redis 7 refuses DEBUG by default).
                *("--enable-debug-command", "local"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as probe:
                    probe.ping()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {self.port} did not start") from None
                time.sleep(0.01)  # waiting for a process to boot, not for a behaviour

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def sleep(self, seconds: int) -> threading.Thread:
        """Make the server slow rather than down: it accepts connections and answers nothing for
        `seconds` (DEBUG SLEEP). Returns once it has stopped answering; join the thread to wait
        for it to answer again."""

        def block() -> None:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=seconds + 30) as c:
                c.execute_command("DEBUG", "SLEEP", str(seconds))

        thread = threading.Thread(target=block, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while True:
            # No retries: redis-py would otherwise retry the timed-out PING until the sleep ends.
            probe = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)
            )
            try:
                probe.ping()
            except redis.TimeoutError:
                return thread
            finally:
                probe.close()
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server never went to sleep")
            time.sleep(0.005)  # waiting for another process's state, not for a behaviour

    def fill_up(self) -> None:
        """Full under `noeviction`: every command that would add data is refused (OOM)."""
        with self.client() as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)

    def make_room(self) -> None:
        with self.client() as admin:
            admin.config_set("maxmemory", 0)

    def calls(self, command: str) -> int:
        with self.client() as probe:
            stats: dict[str, Any] = probe.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def get(self, prefix: str, key: str) -> bytes | None:
        with self.client() as probe:
            value: bytes | None = probe.get(f"{prefix}v:{key}")
        return value


# --- private PostgreSQL -----------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb into a temporary directory, its own port),
    which it may stop, kill and start again: never the machine's server, which other runs share.

    PostgreSQL refuses to run as root: then initdb and pg_ctl run as the `postgres` user, in a
    directory it owns.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="m2m-pg-"))
        self._bin = _postgresql_bin()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, user="postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/m2m"

    @property
    def dsn(self) -> str:
        """The same database, for asyncpg itself (an administrator's connection)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/m2m"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=40 -c shared_buffers=16MB"
        )
        log = str(self.directory / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """`fast` ends every session (in-flight statements fail), `immediate` is a crash, `smart`
        waits for the sessions to end and refuses new ones meanwhile."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w" if wait else "-W", "stop")

    def wait_stopped(self) -> None:
        deadline = time.monotonic() + 30
        while (self.data / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not stop within 30 s")
            time.sleep(0.01)  # waiting for a process to exit, not for a behaviour

    async def refusing_connections(self) -> None:
        """Once new connections are refused with "the database system is shutting down"."""
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = await asyncpg.connect(self.dsn)
            except asyncpg.CannotConnectNowError:
                return
            await connection.close()
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL kept accepting connections")
            await asyncio.sleep(0.01)  # waiting for a process's state, not for a behaviour

    def freeze(self, pids: list[int]) -> None:
        """Stop these server processes of this cluster where they stand (SIGSTOP): a server that
        neither answers nor closes its connections, as behind a network cut."""
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *arguments: str) -> None:
        subprocess.run(
            [*self._as_owner, str(self._bin / program), *arguments],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )


def _version_of(bin_directory: str) -> tuple[int, ...]:
    version = Path(bin_directory).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _postgresql_bin() -> Path:
    """The newest installed server's programs (Debian keeps them off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_of)
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server programs (initdb, pg_ctl) installed")
    return Path(initdb).parent


@dataclass
class Stack:
    """One API process (its services, and a client over its app) using the private Redis."""

    services: Services
    client: httpx.AsyncClient
    redis: PrivateRedis
    settings: Settings


def redis_client(url: str) -> Redis:
    """A client configured as the API configures its own."""
    return Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
