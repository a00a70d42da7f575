"""Load generation with wrk (and its Lua scripts in bench/wrk/), and the argon2 bound."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher, Type

from domain.secrets import Argon2Parameters, new_secret

SCRIPTS = Path(__file__).resolve().parent / "wrk"
RESULT_LINE = re.compile(r"^BENCH-RESULT (?P<fields>.*)$", re.MULTILINE)
# Beyond this share of failed requests a figure measures errors, not the route.
MAX_ERROR_SHARE = 0.01
REQUEST_TIMEOUT_SECONDS = 5


class WrkMissing(Exception):
    pass


class WrkFailed(Exception):
    pass


def wrk_version() -> str:
    executable = shutil.which("wrk")
    if executable is None:
        raise WrkMissing("wrk is not installed: apt-get install -y wrk (see bench/README.md)")
    # `wrk -v` prints its version, then the usage, and exits 1.
    output = subprocess.run(
        [executable, "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return output.splitlines()[0].split(" Copyright")[0] if output else "wrk"


@dataclass(frozen=True)
class Load:
    """One request, repeated by every connection; `script` chooses how (see bench/wrk/)."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    script: str = "request.lua"
    env: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed_status: int  # answers >= 400
    failed_socket: int  # connect, read, write errors and timeouts
    statuses: Mapping[int, int]  # answers by status

    @property
    def failed_answers(self) -> str:
        """The failing statuses, most frequent first, e.g. "503 x81, 429 x2"."""
        failed = sorted(
            ((count, status) for status, count in self.statuses.items() if status >= 400),
            reverse=True,
        )
        return ", ".join(f"{status} x{count}" for count, status in failed)

    @property
    def successes_per_second(self) -> float:
        return (self.requests - self.failed_status) / self.seconds if self.seconds else 0.0

    @property
    def error_share(self) -> float:
        failed = self.failed_status + self.failed_socket
        return failed / max(self.requests, 1)

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.error_share <= MAX_ERROR_SHARE


def run_wrk(load: Load, *, connections: int, seconds: int, transcript: Path) -> LoadResult:
    """Run wrk for `seconds` against 127.0.0.1 and parse the line the Lua `done()` prints.

    One wrk thread: on a small machine it leaves the cores to the servers, and the
    chaining in refresh.lua keeps its token pool per thread.
    """
    command = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        f"{REQUEST_TIMEOUT_SECONDS}s",
        "--latency",
        "--script",
        str(SCRIPTS / load.script),
        load.url,
    ]
    env = {
        **os.environ,
        **load.env,
        "BENCH_METHOD": load.method,
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in load.headers.items()),
    }
    if load.body is not None:
        env["BENCH_BODY"] = load.body
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    with transcript.open("a") as log:
        log.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}\n")
    match = RESULT_LINE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise WrkFailed(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    fields = dict(item.split("=", 1) for item in match["fields"].split(" "))
    return LoadResult(
        requests=int(float(fields["requests"])),
        seconds=float(fields["duration_us"]) / 1e6,
        p50_ms=float(fields["p50_us"]) / 1000,
        p99_ms=float(fields["p99_us"]) / 1000,
        failed_status=int(float(fields["status_errors"])),
        failed_socket=int(float(fields["socket_errors"])),
        statuses={
            int(status): int(count)
            for status, count in (part.split(":") for part in fields["statuses"].split(",") if part)
        },
    )


@dataclass(frozen=True)
class Argon2Bound:
    """What argon2 alone allows: `cores` verifications at once, as the service runs them."""

    cores: int
    verifies: int  # completed by `cores` threads verifying at once
    seconds: float  # the time they took
    alone_seconds: float  # median of one verification with nothing else of ours running
    samples: int
    parameters: Argon2Parameters

    @property
    def verifies_per_second(self) -> float:
        return self.verifies / self.seconds

    @property
    def verify_seconds(self) -> float:
        """One verification's time while every core verifies."""
        return self.cores * self.seconds / self.verifies


def measure_argon2_bound(parameters: Argon2Parameters, samples: int) -> Argon2Bound:
    """What exchange could reach if argon2 were all it did, under the service's conditions.

    The service runs argon2 on a thread pool per process, with every core busy verifying under
    load, so the bound is measured the same way: one thread per core, each verifying in a loop,
    and the bound is the verifications completed per second. That counts what one verification
    alone does not (cores sharing caches and memory bandwidth, clock speeds under an all-core
    load); the time of one verification alone is reported beside it.
    """
    hasher = PasswordHasher(
        time_cost=parameters.time_cost,
        memory_cost=parameters.memory_kib,
        parallelism=parameters.parallelism,
        type=Type.ID,
    )
    secret = new_secret()  # what the service's client secrets look like
    encoded = hasher.hash(secret)
    hasher.verify(encoded, secret)  # warm up the allocator
    durations = []
    for _ in range(max(5, samples // 5)):
        started = time.perf_counter()
        hasher.verify(encoded, secret)
        durations.append(time.perf_counter() - started)
    cores = os.cpu_count() or 1
    per_thread = max(1, -(-samples // cores))

    def verify_in_a_loop() -> None:
        for _ in range(per_thread):
            hasher.verify(encoded, secret)

    threads = [threading.Thread(target=verify_in_a_loop) for _ in range(cores)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Argon2Bound(
        cores=cores,
        verifies=per_thread * cores,
        seconds=time.perf_counter() - started,
        alone_seconds=statistics.median(durations),
        samples=samples,
        parameters=parameters,
    )
