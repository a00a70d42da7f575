"""Wrong checksum vs wrong secret, side by side: how much cheaper the offline refusal of a value
of the secret format with a wrong checksum is than a wrong secret (argon2, PostgreSQL, Redis).

    python bench/checksum.py [--duration 8] [--connections 4] [--rounds 2]

One throwaway stack (as bench/run.py makes it: its own database and Redis prefix, `m2m serve
--workers 2` and the constant-JSON baseline), one credential, and wrk alternating the two loads
on the exchange route, each answered 401, with the baseline beside them. The ratio is requests
per second of the first over the second; the issue asks for at least 20x.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from loadgen import Load, LoadResult, run_wrk, wrk_version
from run import (
    BENCH,
    REPO,
    TENANT_ID,
    VENDOR_CLIENT_ID,
    m2m_command,
    quietly,
    service_environment,
    start_baseline,
    start_service,
)
from seed import EXCHANGE, ServiceClient
from stack import create_database, delete_redis_keys, drop_database

from domain.secrets import BASE62, SecretShape

TARGET = 20.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per load (default 8)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two loads")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    return parser.parse_args(argv)


def wrong_checksum(secret: str) -> str:
    return secret[:-1] + BASE62[(BASE62.index(secret[-1]) + 1) % 62]


def rate(result: LoadResult) -> float:
    """Requests answered per second, whatever their status (every one is a 401 here)."""
    return result.requests / result.seconds if result.seconds else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"bench: {wrk_version()}")
    run_id = secrets.token_hex(4)
    database, prefix = f"m2m_bench_{run_id}", f"m2m-bench:{run_id}:"
    (BENCH / "results").mkdir(exist_ok=True)
    transcript = BENCH / "results" / "checksum-wrk-output.txt"
    transcript.write_text("")
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="m2m-bench-"))
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
        service_url = start_service(env, workdir, cleanup)
        baseline_url = start_baseline(env, workdir, cleanup)
        client = ServiceClient(service_url, TENANT_ID)
        cleanup.callback(client.close)
        client.authenticate_vendor(VENDOR_CLIENT_ID, env["M2M_VENDOR_SECRET"])
        client.create_tenant()
        client.set_strategy("ClientCredentials")
        client_id, secret = client.create_client_credential(client.create_role())
        shape = SecretShape(env.get("M2M_SECRET_PREFIX", "m2m"))
        assert shape.kind_of(secret) == "cs", "the service does not make secrets of the format"

        def exchange(presented: str) -> Load:
            return Load(
                url=f"{service_url}{EXCHANGE}",
                method="POST",
                headers={"Content-Type": "application/json"},
                body=json.dumps({"clientId": client_id, "secret": presented}),
            )

        loads = {
            "wrong checksum": (exchange(wrong_checksum(secret)), 401),
            # The format, a right checksum, never issued.
            "wrong secret": (exchange(shape.new("cs")), 401),
            # The floor any request pays on this machine now: the constant-JSON app of run.py.
            "baseline: constant JSON": (Load(url=f"{baseline_url}/", method="POST", body=""), 200),
        }
        results: dict[str, list[LoadResult]] = {name: [] for name in loads}
        for _ in range(args.rounds):
            for name, (load, status) in loads.items():
                result = run_wrk(
                    load,
                    connections=args.connections,
                    seconds=args.duration,
                    transcript=transcript,
                )
                statuses = dict(result.statuses)
                assert set(statuses) == {status}, f"{name}: answers {statuses}"
                results[name].append(result)
                print(
                    f"bench: {name}: {rate(result):,.0f} req/s, p50 {result.p50_ms:.2f} ms,"
                    f" p99 {result.p99_ms:.2f} ms"
                )
    print()
    print("| load | req/s per round | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        print(
            f"| {name} | {' / '.join(f'{rate(r):,.0f}' for r in runs)} |"
            f" {' / '.join(f'{r.p50_ms:.2f}' for r in runs)} |"
            f" {' / '.join(f'{r.p99_ms:.2f}' for r in runs)} |"
        )
    ratios = [
        rate(fast) / rate(slow)
        for fast, slow in zip(results["wrong checksum"], results["wrong secret"], strict=True)
    ]
    # Each round pairs two loads run back to back; the median round says what the machine's
    # drifting load (it is shared) leaves of the ratio.
    median = statistics.median(ratios)
    verdict = "met" if median >= TARGET else "MISSED"
    listed = " / ".join(f"{ratio:.1f}x" for ratio in ratios)
    print(
        f"\nwrong checksum vs wrong secret, per round: {listed}; median {median:.1f}x"
        f" (target >= {TARGET:.0f}x: {verdict})"
    )
    floor = statistics.median(
        rate(fast) / rate(base)
        for fast, base in zip(
            results["wrong checksum"], results["baseline: constant JSON"], strict=True
        )
    )
    print(f"wrong checksum vs the constant-JSON baseline: median {floor:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
