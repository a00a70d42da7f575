"""Processes a test starts (`m2m serve`, a redis-server of its own), the ports they listen on and
the environment they run under.

A test that starts one is marked `processes` (conftest marks those using its fixtures), so
`pytest -m "not processes"` starts none.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from redis.asyncio import Redis

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
        # The test app's argon2id parameters (the suite's cheap ones), not the production ones.
        "M2M_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib),
        "M2M_ARGON2_TIME_COST": str(settings.argon2_time_cost),
        "M2M_ARGON2_PARALLELISM": str(settings.argon2_parallelism),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(
    settings: Settings, *, cwd: str | None = None, **extra_env: str
) -> Iterator[str]:
    """A real `m2m serve` subprocess on a free port (started in `cwd`); yields its base URL,
    stops it after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port)],
        env={**serve_environment(settings), **extra_env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"m2m serve exited: {process.stderr.read().decode()[-2000:]}")
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

    def calls(self, command: str) -> int:
        with self.client() as probe:
            stats: dict[str, Any] = probe.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def get(self, prefix: str, key: str) -> bytes | None:
        with self.client() as probe:
            value: bytes | None = probe.get(f"{prefix}v:{key}")
        return value


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
