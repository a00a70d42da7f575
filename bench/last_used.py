"""Validation throughput with last-use recording on and off, side by side in one run.

    python bench/last_used.py [--duration 5] [--rounds 4] [--connections 4]

Two `m2m serve --workers 2` on one fresh database and Redis prefix, one with
M2M_RECORD_LAST_USED=true (the default), one with it false. wrk validates the same access token
(with the `x-m2m-client-address` header a vendor's API sends) against each in turn, alternating
which goes first in each round so that drift on a shared machine weighs on both alike. Prints
the median req/s of each, the median of the rounds' on/off ratios (the target: at least 0.95),
what noting one use costs in the process (timed alone), and checks that the token's last use
was written meanwhile. See bench/README.md.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from loadgen import Load, run_wrk, wrk_version
from run import (
    BENCH,
    HOST,
    REPO,
    TENANT_ID,
    VENDOR_CLIENT_ID,
    WORKERS,
    m2m_command,
    quietly,
    service_environment,
)
from seed import VALIDATE, ServiceClient
from stack import Server, create_database, delete_redis_keys, drop_database, free_port

from domain.clock import utcnow
from domain.last_used import UsageRecorder

TARGET_RATIO = 0.95
CLIENT_ADDRESS = "203.0.113.10"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each load")
    parser.add_argument("--rounds", type=int, default=4, help="loads of each server")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "last-used.md")
    args = parser.parse_args(argv)
    args.postgres = args.postgres.rstrip("/")
    return args


def start(name: str, env: dict[str, str], workdir: Path, cleanup: ExitStack) -> str:
    port = free_port()
    server = Server(
        name,
        [m2m_command(), "serve", "--host", HOST, "--port", str(port), "--workers", str(WORKERS)],
        env=env,
        cwd=REPO,
        log=workdir / f"{name}.log",
    )
    cleanup.callback(server.stop)
    server.start(WORKERS)
    return f"http://{HOST}:{port}"


def note_cost_ns(notes: int = 200_000) -> float:
    """Nanoseconds one validation spends noting its use (what recording adds to the hot path)."""
    recorder = UsageRecorder()
    now, address = utcnow(), CLIENT_ADDRESS.encode()
    start = time.perf_counter_ns()
    for _ in range(notes):
        recorder.note_access_token("0f6c6a8e-5f3e-4c55-9d0b-1a2b3c4d5e6f", now, address)
    return (time.perf_counter_ns() - start) / notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = wrk_version()
    run_id = secrets.token_hex(4)
    database = f"m2m_bench_{run_id}"
    prefix = f"m2m-bench:{run_id}:"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    transcript = args.output.parent / "last-used-wrk-output.txt"
    transcript.write_text("")
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="m2m-bench-last-used-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        create_database(args.postgres, database)

        def drop() -> None:
            with quietly(f"dropping database {database}"):
                drop_database(args.postgres, database)

        def forget_keys() -> None:
            with quietly(f"deleting Redis keys {prefix}*"):
                delete_redis_keys(args.redis, prefix)

        cleanup.callback(drop)
        cleanup.callback(forget_keys)
        env = service_environment(args, database, prefix)
        subprocess.run(
            [m2m_command(), "migrate"],
            env=env,
            cwd=REPO,
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
        print(f"bench: starting two m2m serve ({WORKERS} workers each): recording on and off")
        urls = {
            "on": start("recording-on", {**env, "M2M_RECORD_LAST_USED": "true"}, workdir, cleanup),
            "off": start(
                "recording-off", {**env, "M2M_RECORD_LAST_USED": "false"}, workdir, cleanup
            ),
        }
        client = ServiceClient(urls["on"], TENANT_ID)
        cleanup.callback(client.close)
        client.authenticate_vendor(VENDOR_CLIENT_ID, env["M2M_VENDOR_SECRET"])
        client.create_tenant()
        client.set_strategy("AccessToken")
        time.sleep(0.2)  # the other process sees a change within 100 ms
        token = client.create_access_token()
        headers = {"X-API-KEY": token, "x-m2m-client-address": CLIENT_ADDRESS}
        for url in urls.values():
            ServiceClient(url, TENANT_ID).validate(headers)

        rates: dict[str, list[float]] = {"on": [], "off": []}
        for number in range(args.rounds):
            order = ("on", "off") if number % 2 == 0 else ("off", "on")
            for mode in order:
                load = Load(url=urls[mode] + VALIDATE, method="POST", headers=headers, body="")
                result = run_wrk(
                    load, connections=args.connections, seconds=args.duration, transcript=transcript
                )
                if not result.valid:
                    sys.exit(f"bench: recording {mode}: {result.failed_answers or 'socket errors'}")
                rates[mode].append(result.successes_per_second)
                print(f"bench: round {number + 1}, recording {mode}: {rates[mode][-1]:,.0f} req/s")

        listed = client.http.get(
            "/identity/resources/tenants/access-tokens/v1", headers=client.tenant_headers
        ).json()["accessTokens"]
        deadline = time.monotonic() + 30
        while not listed[0]["lastUsedAt"] and time.monotonic() < deadline:
            time.sleep(0.5)  # written every few seconds by the recording server
            listed = client.http.get(
                "/identity/resources/tenants/access-tokens/v1", headers=client.tenant_headers
            ).json()["accessTokens"]
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        # Each round's two loads ran back to back: their ratio sees the least drift.
        ratio = statistics.median(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
        note_ns = note_cost_ns()
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        text = "\n".join(
            [
                "# Validation with last-use recording on and off",
                "",
                f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {wrk} · 1 thread, "
                f"{args.connections} connections, {args.rounds} alternating loads of "
                f"{args.duration} s per server, each `m2m serve --workers {WORKERS}`",
                "",
                "| recording | median req/s | every load (req/s) |",
                "|---|---|---|",
                f"| on | {on:,.0f} | {', '.join(f'{rate:,.0f}' for rate in rates['on'])} |",
                f"| off | {off:,.0f} | {', '.join(f'{rate:,.0f}' for rate in rates['off'])} |",
                "",
                f"on / off, the median of the rounds' ratios = **{ratio:.3f}** ({verdict} the "
                f"target of {TARGET_RATIO}); median over median {on / off:.3f}. "
                f"Noting one use costs {note_ns:,.0f} ns in the process. "
                f"Last use written: {listed[0]['lastUsedAt'] or 'NOT within 30 s'}, from "
                f"{[use['address'] for use in listed[0]['lastUsedFrom']]}.",
            ]
        )
        args.output.write_text(text + "\n")
        print()
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
