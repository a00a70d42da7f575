"""`m2m serve --workers 2`: the shared listener spreads connections and survives a dead worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from domain.settings import Settings
from tests.processes import free_port, serve_environment

pytestmark = pytest.mark.processes


def start_serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from api.cli import main; main()", "serve"]
    with log.open("wb") as output:
        return subprocess.Popen(
            [*command, "--port", str(port), "--workers", "2"],
            env=serve_environment(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


async def answers(base: str, connections: int, requests: int) -> list[int]:
    """Status codes of `requests` sequential requests on each of `connections` keep-alive
    connections, all at once."""

    async def one_connection() -> list[int]:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
            return [(await http.get("/health/live")).status_code for _ in range(requests)]

    results = await asyncio.gather(*(one_connection() for _ in range(connections)))
    return [status for result in results for status in result]


async def test_two_workers_answer_every_connection_and_outlive_a_killed_worker(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(settings, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while len(children(process.pid)) < 2 or not await _up(base):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)  # waiting for processes to boot, not for a behaviour

        before = await answers(base, connections=8, requests=20)
        os.kill(children(process.pid)[0], signal.SIGKILL)
        after = await answers(base, connections=8, requests=20)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    assert before == [200] * 160
    assert after == [200] * 160


async def _up(base: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=base, timeout=1) as http:
            return (await http.get("/health/live")).status_code == 200
    except httpx.HTTPError:
        return False
