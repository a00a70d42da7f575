"""`m2m serve --workers 2` (Granian): connections spread over the workers, a dead worker is
replaced, and a stop answers the requests in flight first."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from api.app import STARTED
from domain.settings import Settings
from tests.processes import free_port, serve_environment

pytestmark = pytest.mark.processes

VALIDATE = "/identity/resources/auth/v1/validate"
REFUSED_VALIDATIONS = 'm2m_requests_total{operation="validation",outcome="rejected"}'


def start_serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from api.cli import main; main()", "serve"]
    with log.open("wb") as output:
        return subprocess.Popen(
            [*command, "--port", str(port), "--workers", "2"],
            env={**serve_environment(settings), "M2M_METRICS_PUBLIC": "true"},
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


async def wait_until_serving(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def log_tail() -> str:
        return log.read_text()[-3000:]

    deadline = time.monotonic() + 60
    while len(children(process.pid)) < 2 or not await _up(base):
        assert process.poll() is None, log_tail()
        assert time.monotonic() < deadline, log_tail()
        await asyncio.sleep(0.1)  # waiting for processes to boot, not for a behaviour


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process `pid` holds open."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(fields[9])
    held = 0
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


async def test_two_workers_answer_every_connection_and_outlive_a_killed_worker(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(settings, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(process, base, log)

        before = await answers(base, connections=8, requests=20)
        os.kill(children(process.pid)[0], signal.SIGKILL)
        after = await answers(base, connections=8, requests=20)
        # The dead worker is replaced (and its replacement started before the stop below).
        deadline = time.monotonic() + 60
        while log.read_text().count(STARTED) < 3:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)  # waiting for a process to boot, not for a behaviour
        assert len(children(process.pid)) == 2
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


def test_connections_opened_at_once_are_spread_over_the_workers(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(settings, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_until_serving(process, base, log))
        # Eight keep-alive connections opened together, as a proxy's pool or wrk opens them,
        # each answered once and kept open.
        clients = [httpx.Client(base_url=base, timeout=10) for _ in range(8)]
        try:
            with ThreadPoolExecutor(len(clients)) as pool:
                opened = list(pool.map(lambda client: client.get("/health/live"), clients))
            assert [response.status_code for response in opened] == [200] * 8
            held = [connections_held(worker, port) for worker in children(process.pid)]
            # Five refused validations on each connection, so on both workers.
            refused = [client.post(VALIDATE).status_code for client in clients for _ in range(5)]
            metrics = clients[0].get("/metrics")
        finally:
            for client in clients:
                client.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    assert sum(held) == 8
    assert min(held) >= 2, held  # not all (or all but one) on one worker
    assert refused == [401] * 40
    # /metrics sums what every worker counted, whichever answers the scrape.
    assert metrics.status_code == 200
    assert REFUSED_VALIDATIONS + " 40.0" in metrics.text.splitlines(), metrics.text


def test_a_stop_answers_the_request_in_flight_then_exits(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = start_serve(settings, port, log)
    body = b'{"clientId": "no-such-client", "secret": "no-such-secret"}'
    head = (
        b"POST /identity/resources/auth/v2/api-token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    try:
        asyncio.run(wait_until_serving(process, f"http://127.0.0.1:{port}", log))
        with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
            # A first request on the connection: a worker has taken it when the answer comes.
            connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            # The second is in flight: its headers and half its body sent, the rest held back
            # (a slow client) while the server is told to stop.
            connection.sendall(head + body[:10])
            process.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                process.wait(timeout=1)  # it waits for the request, however long it takes
            connection.sendall(body[10:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = connection.recv(65536)
                assert chunk, answer
                answer += chunk
        # Answered by the route (an unknown client), not cut off.
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert process.wait(timeout=30) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
