"""A million tokens: 1,000,000 access tokens and 1,000,000 client
credentials in PostgreSQL, 100,000 distinct tokens validated through `m2m serve --workers 2`,
each API process's resident memory over time, warm validation against the one-token case, the
cold path (first sight of a token), and `/active` at a million tokens.

    python bench/million.py [--tokens 1000000] [--distinct 100000] [--duration 10]

See bench/README.md ("A million tokens").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import secrets
import signal
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives import serialization
from loadgen import Load, LoadResult, run_wrk
from observe import Figure, machine_note, render_figures, resident_mb, worker_pids
from run import (
    TENANT_ID,
    VENDOR_CLIENT_ID,
    WORKERS,
    migrated_scratch,
    start_service_process,
)
from seed import ACTIVE, VALIDATE, ServiceClient
from stack import Server

from domain.keys import MasterKey
from domain.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RSS_LIMIT_MB = 300.0
WARM_MIN_SHARE = 0.9  # warm validation of many tokens against the one-token case
# "Stops growing once warm": growth from the end of the warm-up to the end of the run.
WARM_GROWTH_LIMIT = 0.05

SEED_ACCESS_TOKENS = """
INSERT INTO access_tokens
    (id, tenant_id, description, created_at, signing_kid, last_used_addresses)
SELECT md5($3 || n)::uuid::text, $1, 'million ' || n, now(), $4, '[]'::json
FROM generate_series(1, $2::int) AS n
"""
SEED_CREDENTIALS = """
INSERT INTO client_credentials
    (client_id, tenant_id, description, metadata, secret_hash, created_at, updated_at,
     last_used_addresses)
SELECT md5($3 || n)::uuid::text, t.tenant_id, 'million ' || n, t.metadata, t.secret_hash,
       now(), now(), t.last_used_addresses
FROM client_credentials AS t, generate_series(1, $2::int) AS n
WHERE t.client_id = $1
"""
ACTIVE_SIGNING_KEY = """
SELECT kid, private_key_encrypted FROM signing_keys
WHERE activated_at IS NOT NULL AND retired_at IS NULL ORDER BY activated_at DESC LIMIT 1
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokens",
        type=int,
        default=1_000_000,
        help="access tokens seeded (and as many client credentials)",
    )
    parser.add_argument("--distinct", type=int, default=100_000, help="tokens validated")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured load")
    parser.add_argument("--cold", type=int, default=10, help="seconds of first sights")
    parser.add_argument(
        "--warm-passes",
        type=int,
        default=2,
        help="passes over the distinct tokens before measuring warm",
    )
    parser.add_argument("--warmup-max", type=int, default=600, help="seconds at most")
    parser.add_argument("--rounds", type=int, default=3, help="one token / many, alternating")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=RESULTS / "million.md")
    args = parser.parse_args(argv)
    if not 1 <= args.distinct <= args.tokens:
        parser.error("--distinct must be between 1 and --tokens")
    args.postgres = args.postgres.rstrip("/")
    return args


class MemoryWatch:
    """Samples each API process's VmRSS every `every` seconds, tagged with the current phase."""

    def __init__(self, server: Server, every: float = 2.0) -> None:
        self.server = server
        self.every = every
        self.phase = "start"
        self.samples: list[tuple[float, str, int, float]] = []  # (seconds, phase, pid, MB)
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> dict[int, float]:
        pids = worker_pids(self.server.pid) if self.server.pid else []
        now = {pid: rss for pid in pids if (rss := resident_mb(pid)) is not None}
        at = time.monotonic() - self.started
        self.samples.extend((at, self.phase, pid, rss) for pid, rss in now.items())
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.take()


def token_id(salt: str, number: int) -> str:
    """The id SEED_ACCESS_TOKENS gives row `number`: md5(salt || n) read as a UUID."""
    return str(uuid.UUID(hashlib.md5(f"{salt}{number}".encode()).hexdigest()))


_SIGNING: dict[str, object] = {}


def _start_signing(kid: str, private_der: bytes, issuer: str, tenant_id: str, salt: str) -> None:
    # The pool stops its processes with SIGTERM: not the KeyboardInterrupt main() makes of it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _SIGNING.update(
        kid=kid,
        key=serialization.load_der_private_key(private_der, password=None),
        issuer=issuer,
        tenant_id=tenant_id,
        salt=salt,
        iat=int(time.time()),
    )


def _sign(number: int) -> str:
    """The access token of row `number`, as the service signs it (domain/tokens.py)."""
    import jwt

    claims = {
        "type": "tenantAccessToken",
        "sub": token_id(str(_SIGNING["salt"]), number),
        "tenantId": _SIGNING["tenant_id"],
        "iss": _SIGNING["issuer"],
        "iat": _SIGNING["iat"],
    }
    return jwt.encode(
        claims,
        _SIGNING["key"],
        algorithm="RS256",  # type: ignore[arg-type]
        headers={"kid": _SIGNING["kid"]},
    )


async def seed_million(
    dsn: str,
    master: MasterKey,
    issuer: str,
    args: argparse.Namespace,
    template: str,
    salt: str,
) -> tuple[list[str], float, float]:
    """Seed the rows and sign the distinct tokens to validate; (them, seconds seeding, signing)."""
    connection = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        key = await connection.fetchrow(ACTIVE_SIGNING_KEY)
        await connection.execute(SEED_ACCESS_TOKENS, TENANT_ID, args.tokens, salt, key["kid"])
        await connection.execute(SEED_CREDENTIALS, template, args.tokens, salt)
        await connection.execute("ANALYZE access_tokens")
        await connection.execute("ANALYZE client_credentials")
        seeding = time.monotonic() - started
    finally:
        await connection.close()
    private_der = master.decrypt(key["private_key_encrypted"], key["kid"].encode())
    started = time.monotonic()
    # Tokens are taken spread over the whole table (every k-th row), in a shuffled order.
    step = args.tokens // args.distinct
    numbers = [1 + step * index for index in range(args.distinct)]
    secrets.SystemRandom().shuffle(numbers)
    with multiprocessing.get_context("fork").Pool(
        initializer=_start_signing, initargs=(key["kid"], private_der, issuer, TENANT_ID, salt)
    ) as pool:
        tokens = pool.map(_sign, numbers, chunksize=1000)
    return tokens, seeding, time.monotonic() - started


def describe(result: LoadResult) -> str:
    failed = f"; {result.failed_answers}" if result.failed_status else ""
    if result.failed_socket:
        failed += f"; {result.failed_socket} socket errors or timeouts"
    return (
        f"{result.successes_per_second:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms{failed}"
    )


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(4)
    database = f"m2m_bench_{run_id}"
    prefix = f"m2m-bench:{run_id}:"
    RESULTS.mkdir(parents=True, exist_ok=True)
    transcript = RESULTS / "million-wrk-output.txt"
    transcript.write_text("")
    figures: list[Figure] = []
    with ExitStack() as cleanup:
        env, workdir = migrated_scratch(args, cleanup, "million", database, prefix)
        url, server = start_service_process(env, workdir, cleanup, log_name="million.log")
        watch = MemoryWatch(server)
        watch.start()
        cleanup.callback(watch.stop)
        client = ServiceClient(url, TENANT_ID)
        cleanup.callback(client.close)
        client.authenticate_vendor(VENDOR_CLIENT_ID, env["M2M_VENDOR_SECRET"])
        client.create_tenant()
        role_id = client.create_role()
        template = client.create_client_credential(role_id)[0]
        client.set_strategy("AccessToken")
        one_token = client.create_access_token()
        client.validate({"X-API-KEY": one_token})

        settings = load_settings(env, mode="serve")
        tokens_file = workdir / "tokens.txt"
        print(
            f"million: seeding {args.tokens:,} access tokens and {args.tokens:,} credentials, "
            f"signing {args.distinct:,} of the tokens"
        )
        tokens, seeding, signing = asyncio.run(
            seed_million(
                f"{args.postgres}/{database}",
                MasterKey(settings.master_key),
                settings.issuer,
                args,
                template,
                run_id,
            )
        )
        tokens_file.write_text("\n".join(tokens) + "\n")
        figures.append(
            Figure(
                "seeded",
                f"{args.tokens:,} access tokens + {args.tokens:,} "
                f"credentials in {seeding:.0f} s; {args.distinct:,} tokens "
                f"signed in {signing:.0f} s",
            )
        )
        client.validate({"X-API-KEY": tokens_file.read_text().split("\n", 1)[0]})
        one_file = workdir / "one-token.txt"
        one_file.write_text(one_token + "\n")

        def validate(tokens: Path, seconds: int, start: int = 1) -> LoadResult:
            load = Load(
                url=url + VALIDATE,
                method="POST",
                script="tokens.lua",
                env={"BENCH_TOKENS": str(tokens), "BENCH_START": str(start)},
            )
            result = run_wrk(
                load, connections=args.connections, seconds=seconds, transcript=transcript
            )
            time.sleep(0.5)
            return result

        rss_rows: list[tuple[str, dict[int, float]]] = [("after seeding, idle", watch.take())]

        # The cold path: each request of this load is the first sight of its token.
        watch.phase = "cold"
        cold = validate(tokens_file, args.cold)
        seen = min(cold.requests + args.connections, args.distinct)
        wrapped = cold.requests + args.connections > args.distinct
        print(f"million: cold, first sight of {seen:,} tokens: {describe(cold)}")
        figures.append(
            Figure(
                f"cold path: first sight of a token ({cold.requests:,} tokens"
                + (", the list wrapped: some were second sights" if wrapped else "")
                + ")",
                f"p50 {cold.p50_ms:.2f} ms, p99 {cold.p99_ms:.2f} ms "
                f"({cold.successes_per_second:,.0f} req/s)",
                "report",
                None,
            )
        )
        rss_rows.append(("after the cold load", watch.take()))

        # Warm-up passes over every distinct token (until each has been sent --warm-passes
        # times, or --warmup-max seconds), then the one-token case and the warm many-token
        # case alternating, --rounds times: the machine's load drifts, so compare neighbours.
        watch.phase = "warm-up"
        sent, warmup_started = cold.requests, time.monotonic()
        while sent < args.warm_passes * args.distinct:
            if time.monotonic() - warmup_started >= args.warmup_max:
                break
            chunk = validate(tokens_file, 20, start=sent % args.distinct + 1)
            sent += chunk.requests
            print(f"million: warming up, {sent / args.distinct:.2f} passes: {describe(chunk)}")
        warmup_seconds = time.monotonic() - warmup_started
        passes = sent / args.distinct
        rss_rows.append(("after the warm-up", watch.take()))
        validate(one_file, 2)
        shares, ones, warms = [], [], []
        for number in range(1, args.rounds + 1):
            watch.phase = "one token"
            one = validate(one_file, args.duration)
            watch.phase = "warm"
            warm = validate(tokens_file, args.duration, start=1 + number * 997)
            ones.append(one)
            warms.append(warm)
            shares.append(warm.successes_per_second / max(one.successes_per_second, 1e-9))
            print(
                f"million: round {number}: one token {describe(one)}; "
                f"{args.distinct:,} tokens {describe(warm)}; {shares[-1]:.2f}x"
            )
        share = statistics.median(shares)
        figures.append(
            Figure(
                "validation, one token (access token, warm), per round",
                " / ".join(f"{one.successes_per_second:,.0f}" for one in ones)
                + " req/s; p99 "
                + " / ".join(f"{one.p99_ms:.1f}" for one in ones)
                + " ms",
            )
        )
        figures.append(
            Figure(
                f"validation, {args.distinct:,} distinct tokens, warm ({passes:.1f} passes over "
                f"them in {warmup_seconds:.0f} s before), per round",
                " / ".join(f"{warm.successes_per_second:,.0f}" for warm in warms)
                + " req/s; p99 "
                + " / ".join(f"{warm.p99_ms:.1f}" for warm in warms)
                + " ms; ratio per round "
                + " / ".join(f"{value:.2f}" for value in shares)
                + f", median {share:.2f}x",
                f"median ≥ {WARM_MIN_SHARE:g}x the one-token case",
                share >= WARM_MIN_SHARE,
            )
        )
        rss_rows.append(("after the warm rounds", watch.take()))

        for gzip in (False, True):
            watch.phase = "/active"
            ids, size = client.active_ids(gzip=gzip)
            headers = {**client.vendor_headers, "Accept-Encoding": "gzip" if gzip else "identity"}
            load = Load(url=url + ACTIVE, headers=headers)
            run_wrk(load, connections=args.connections, seconds=2, transcript=transcript)
            time.sleep(2)
            active = run_wrk(
                load, connections=args.connections, seconds=args.duration, transcript=transcript
            )
            time.sleep(2)
            print(f"million: /active{' gzip' if gzip else ''}: {describe(active)}")
            figures.append(
                Figure(
                    f"/active, {len(ids):,} ids ({size / 1e6:.1f} MB an answer"
                    + (", gzip asked" if gzip else "")
                    + ")",
                    describe(active),
                    "p99: report",
                )
            )
        rss_rows.append(("after /active", watch.take()))
        watch.stop()

        pids = sorted({pid for _, _, pid, _ in watch.samples})
        for number, pid in enumerate(pids, 1):
            series = [rss for _, _, pid_, rss in watch.samples if pid_ == pid]
            points = " → ".join(f"{rows.get(pid, 0):.0f}" for _, rows in rss_rows)
            peak = max(series)
            warm_start = next(
                (
                    rows[pid]
                    for name, rows in rss_rows
                    if name == "after the warm-up" and pid in rows
                ),
                series[0],
            )
            warm_end = next(
                (
                    rows[pid]
                    for name, rows in rss_rows
                    if name == "after the warm rounds" and pid in rows
                ),
                series[-1],
            )
            growth = (warm_end - warm_start) / warm_start
            figures.append(
                Figure(
                    f"API process {number}: resident MB ({', '.join(n for n, _ in rss_rows)})",
                    f"{points} (peak {peak:.0f})",
                    f"< {RSS_LIMIT_MB:.0f} MB",
                    peak < RSS_LIMIT_MB,
                )
            )
            figures.append(
                Figure(
                    f"API process {number}: growth once warm (after the warm-up → after the "
                    "warm loads)",
                    f"{warm_start:.0f} → {warm_end:.0f} MB ({growth:+.1%})",
                    f"< {WARM_GROWTH_LIMIT:.0%}",
                    growth < WARM_GROWTH_LIMIT,
                )
            )
        curve = RESULTS / "million-memory.csv"
        curve.write_text(
            "seconds,phase,pid,rss_mb\n"
            + "".join(
                f"{at:.1f},{phase},{pid},{rss:.1f}\n" for at, phase, pid, rss in watch.samples
            )
        )

    preamble = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_note()} · `m2m serve --workers "
        f"{WORKERS}` · wrk, 1 thread, {args.connections} connections, {args.duration} s a load "
        f"(the cold load {args.cold} s); every request carries a different token than the one "
        "before (bench/wrk/tokens.lua), the one-token case through the same script. "
        "Resident memory: VmRSS of each Granian worker, sampled every 2 s "
        "(`bench/results/million-memory.csv`).",
    ]
    text = render_figures("A million tokens", preamble, figures)
    args.output.write_text(text)
    print()
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("million: interrupted; stopped the server and removed the database", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
