"""A soak: mixed traffic for minutes or hours on `m2m serve --workers 2`
with a Celery worker and beat, watching 5xx answers, memory, database connections, latency per
minute and the background jobs' runs.

    python bench/soak.py [--soak 10] [--rate 100] [--concurrency 8]

See bench/README.md ("Soak").
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import signal
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from observe import (
    Figure,
    database_connections,
    machine_note,
    percentile,
    render_figures,
    resident_mb,
    worker_pids,
)
from run import (
    TENANT_ID,
    VENDOR_CLIENT_ID,
    WORKERS,
    m2m_command,
    migrated_scratch,
    start_service_process,
)
from seed import EXCHANGE, REFRESH, VALIDATE, ServiceClient
from stack import Server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CREDENTIALS = "/identity/resources/tenants/api-tokens/v2"  # created here
CREDENTIAL = "/identity/resources/tenants/api-tokens/v1/{}"  # deleted here
# The mix: about 90% validation, the rest exchange, refresh, create and delete.
MIX = (
    ("validate", 0.90),
    ("exchange", 0.03),
    ("refresh", 0.04),
    ("create", 0.015),
    ("delete", 0.015),
)
MEMORY_GROWTH_LIMIT = 0.10  # after the first minute
CELERY_READY = "ready."
BEAT_READY = "beat: Starting"
# Each API process's SQLAlchemy pool: pool_size + max_overflow (domain/db.py).
API_POOL_LIMIT = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soak", type=float, default=10, metavar="MINUTES", help="default 10")
    parser.add_argument("--rate", type=float, default=100, help="requests per second in all")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    parser.add_argument("--sample-seconds", type=float, default=5, help="memory/connections")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=RESULTS / "soak.md")
    args = parser.parse_args(argv)
    if args.soak <= 0 or args.rate <= 0 or args.concurrency < 1:
        parser.error("--soak, --rate and --concurrency must be positive")
    args.postgres = args.postgres.rstrip("/")
    return args


@dataclass
class Observations:
    started: float = field(default_factory=time.monotonic)
    # (seconds since the start, kind, status (0: no answer), latency in ms)
    requests: list[tuple[float, str, int, float]] = field(default_factory=list)
    # (seconds, process label, resident MB)
    memory: list[tuple[float, str, float]] = field(default_factory=list)
    # (seconds, connections to the bench database)
    connections: list[tuple[float, int]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Traffic:
    """What the load needs: tokens to validate and to refresh, credentials to delete."""

    client: httpx.AsyncClient
    vendor_headers: dict[str, str]
    exchange_credential: tuple[str, str]
    jwt: str
    refresh_tokens: list[str]  # one per load task, its own chain
    role_id: str  # what created credentials are given
    created: list[str] = field(default_factory=list)  # clientIds to delete


async def one_request(traffic: Traffic, kind: str, task: int) -> httpx.Response:
    http = traffic.client
    if kind == "delete" and not traffic.created:
        kind = "create"
    if kind == "validate":
        return await http.post(VALIDATE, headers={"Authorization": f"Bearer {traffic.jwt}"})
    if kind == "exchange":
        client_id, secret = traffic.exchange_credential
        answer = await http.post(EXCHANGE, json={"clientId": client_id, "secret": secret})
        if answer.status_code in (200, 201):
            traffic.jwt = answer.json()["access_token"]  # validations use the newest JWT
        return answer
    if kind == "refresh":
        answer = await http.post(REFRESH, json={"refreshToken": traffic.refresh_tokens[task]})
        if answer.status_code in (200, 201):
            traffic.refresh_tokens[task] = answer.json()["refresh_token"]
        return answer
    if kind == "create":
        answer = await http.post(
            CREDENTIALS,
            json={"description": "soak", "roleIds": [traffic.role_id]},
            headers=traffic.vendor_headers,
        )
        if answer.status_code == 201:
            traffic.created.append(answer.json()["clientId"])
        return answer
    client_id = traffic.created.pop(0)
    return await http.delete(CREDENTIAL.format(client_id), headers=traffic.vendor_headers)


async def load(
    traffic: Traffic, observed: Observations, args: argparse.Namespace, until: float
) -> None:
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    interval = args.concurrency / args.rate  # each task's share of the rate

    async def task(index: int) -> None:
        rng = random.Random(index)
        next_at = time.monotonic() + rng.random() * interval
        # A task that falls behind sends at once, but never after the end: the soak lasts
        # its minutes even when the machine cannot keep the rate (the rate achieved is shown).
        while next_at < until and time.monotonic() < until:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            kind = rng.choices(kinds, weights)[0]
            started = time.monotonic()
            try:
                status = (await one_request(traffic, kind, index)).status_code
            except httpx.HTTPError:
                status = 0
            observed.requests.append(
                (started - observed.started, kind, status, (time.monotonic() - started) * 1000)
            )

    await asyncio.gather(*(task(index) for index in range(args.concurrency)))


def processes(servers: dict[str, Server]) -> dict[str, int]:
    """Label -> pid of every process that does the work (API workers, Celery's, beat)."""
    found = {}
    for name, server in servers.items():
        if server.pid is None:
            continue
        pids = worker_pids(server.pid)
        for number, pid in enumerate(pids, 1):
            found[f"{name} {number}" if len(pids) > 1 else name] = pid
    return found


async def sample(
    servers: dict[str, Server],
    observed: Observations,
    args: argparse.Namespace,
    database: str,
    until: float,
) -> None:
    while time.monotonic() < until:
        at = observed.now()
        for label, pid in processes(servers).items():
            rss = resident_mb(pid)
            if rss is not None:
                observed.memory.append((at, label, rss))
        try:
            observed.connections.append((at, await database_connections(args.postgres, database)))
        except (OSError, asyncpg.PostgresError) as error:
            print(f"soak: counting connections failed: {error}", file=sys.stderr)
        await asyncio.sleep(args.sample_seconds)


async def job_runs(admin_dsn: str, database: str) -> list[tuple[str, str, int]]:
    connection = await asyncpg.connect(f"{admin_dsn}/{database}")
    try:
        rows = await connection.fetch(
            "SELECT job, outcome, count(*) AS runs FROM job_runs GROUP BY job, outcome "
            "ORDER BY job, outcome"
        )
    finally:
        await connection.close()
    return [(row["job"], row["outcome"], int(row["runs"])) for row in rows]


def summarise(
    observed: Observations,
    runs: list[tuple[str, str, int]],
    worker_processes: int,
    minutes: float,
) -> tuple[list[Figure], list[str]]:
    figures = []
    requests = observed.requests
    errors_5xx = sum(1 for _, _, status, _ in requests if status >= 500)
    unanswered = sum(1 for _, _, status, _ in requests if status == 0)
    other = sum(1 for _, _, status, _ in requests if 400 <= status < 500)
    by_kind: dict[str, int] = defaultdict(int)
    for _, kind, _, _ in requests:
        by_kind[kind] += 1
    mix = ", ".join(f"{kind} {count:,}" for kind, count in sorted(by_kind.items()))
    achieved = len(requests) / (minutes * 60)
    figures.append(Figure("requests", f"{len(requests):,}, {achieved:.0f}/s ({mix})"))
    figures.append(Figure("5xx answers", f"{errors_5xx:,}", "0", errors_5xx == 0))
    figures.append(
        Figure("no answer (timeout, connection error)", f"{unanswered:,}", "0", unanswered == 0)
    )
    refused: dict[tuple[str, int], int] = defaultdict(int)
    for _, kind, status, _ in requests:
        if 400 <= status < 500:
            refused[kind, status] += 1
    refused_text = ", ".join(
        f"{kind} {status} x{count}" for (kind, status), count in sorted(refused.items())
    )
    figures.append(
        Figure(
            "4xx answers (none expected)",
            f"{other:,}" + (f" ({refused_text})" if refused else ""),
            "0",
            other == 0,
        )
    )
    latencies = [ms for _, _, status, ms in requests if status]
    validations = [ms for _, kind, status, ms in requests if kind == "validate" and status]
    figures.append(
        Figure(
            "latency, all: p50 / p99 ms",
            f"{percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f}",
        )
    )
    figures.append(
        Figure(
            "latency, validation: p50 / p99 ms",
            f"{percentile(validations, 0.5):.1f} / {percentile(validations, 0.99):.1f}",
        )
    )

    labels = sorted({label for _, label, _ in observed.memory})
    for label in labels:
        series = [(at, rss) for at, label_, rss in observed.memory if label_ == label]
        after_first_minute = [rss for at, rss in series if at >= 60] or [series[0][1]]
        first, last, peak = after_first_minute[0], series[-1][1], max(rss for _, rss in series)
        growth = (last - first) / first if first else 0.0
        figures.append(
            Figure(
                f"resident memory, {label}: at 1 min → end (peak)",
                f"{first:.0f} → {last:.0f} MB ({growth:+.1%}; peak {peak:.0f})",
                f"growth < {MEMORY_GROWTH_LIMIT:.0%}",
                growth < MEMORY_GROWTH_LIMIT,
            )
        )
    counts = [count for _, count in observed.connections]
    bound = WORKERS * API_POOL_LIMIT + worker_processes
    if counts:
        figures.append(
            Figure(
                "PostgreSQL connections to the bench database: median / max",
                f"{percentile(counts, 0.5):.0f} / {max(counts)}",
                f"≤ {bound} ({WORKERS} API pools of {API_POOL_LIMIT}, 1 a Celery process)",
                max(counts) <= bound,
            )
        )
    failed = sum(count for _, outcome, count in runs if outcome not in ("success", "running"))
    total = sum(count for _, _, count in runs)
    detail = "; ".join(f"{job} {outcome} x{count}" for job, outcome, count in runs)
    figures.append(
        Figure(
            f"job runs in {minutes:g} min",
            f"{total} ({detail})",
            "every run successful",
            total > 0 and failed == 0,
        )
    )
    return figures, per_minute_rows(observed)


def per_minute_rows(observed: Observations) -> list[str]:
    by_minute: dict[int, list[tuple[str, int, float]]] = defaultdict(list)
    for at, kind, status, ms in observed.requests:
        by_minute[int(at // 60)].append((kind, status, ms))
    memory_by_minute: dict[int, dict[str, float]] = defaultdict(dict)
    for at, label, rss in observed.memory:
        memory_by_minute[int(at // 60)][label] = rss  # the last sample of that minute
    connections_by_minute: dict[int, int] = defaultdict(int)
    for at, count in observed.connections:
        connections_by_minute[int(at // 60)] = max(connections_by_minute[int(at // 60)], count)
    lines = [
        "| minute | requests | 5xx | p50 ms | p99 ms | validation p99 ms | API RSS MB | "
        "max DB connections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for minute in sorted(by_minute):
        rows = by_minute[minute]
        all_ms = [ms for _, status, ms in rows if status]
        validation_ms = [ms for kind, status, ms in rows if kind == "validate" and status]
        api = "/".join(
            f"{rss:.0f}"
            for label, rss in sorted(memory_by_minute[minute].items())
            if label.startswith("api")
        )
        lines.append(
            f"| {minute + 1} | {len(rows):,} | {sum(1 for _, s, _ in rows if s >= 500)} | "
            f"{percentile(all_ms, 0.5):.1f} | {percentile(all_ms, 0.99):.1f} | "
            f"{percentile(validation_ms, 0.99):.1f} | {api} | "
            f"{connections_by_minute.get(minute, 0)} |"
        )
    return lines


def draw(observed: Observations, path: Path) -> None:
    """The curve: each process's resident memory, and latency percentiles per minute."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (memory, latency) = pyplot.subplots(2, 1, figsize=(10, 8), sharex=True)
    for label in sorted({label for _, label, _ in observed.memory}):
        points = [(at / 60, rss) for at, label_, rss in observed.memory if label_ == label]
        memory.plot([p[0] for p in points], [p[1] for p in points], label=label)
    memory.set_ylabel("resident memory (MB)")
    memory.set_ylim(bottom=0)
    memory.legend(fontsize="small", ncol=2)
    memory.grid(alpha=0.3)
    memory.set_title("Soak: m2m serve --workers 2, a Celery worker and beat, mixed traffic")
    buckets: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for at, kind, status, ms in observed.requests:
        if status:
            buckets[int(at // 30)].append((kind, ms))
    times = [(bucket + 0.5) / 2 for bucket in sorted(buckets)]
    for name, share, only in (
        ("p50, all", 0.5, None),
        ("p99, all", 0.99, None),
        ("p99, validation", 0.99, "validate"),
    ):
        values = [
            percentile([ms for kind, ms in buckets[b] if only is None or kind == only], share)
            for b in sorted(buckets)
        ]
        latency.plot(times, values, label=name, marker=".")
    latency.set_yscale("log")
    latency.set_ylabel("latency per 30 s (ms, log)")
    latency.set_xlabel("minutes")
    latency.legend(fontsize="small")
    latency.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def start(
    name: str,
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    ready: str,
    cleanup: ExitStack,
) -> Server:
    server = Server(name, command, env=env, cwd=REPO, log=workdir / f"{name}.log", ready_line=ready)
    cleanup.callback(server.stop)
    server.start(1)
    return server


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(4)
    database = f"m2m_bench_{run_id}"
    prefix = f"m2m-bench:{run_id}:"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        env, workdir = migrated_scratch(args, cleanup, "soak", database, prefix)
        service_url, api = start_service_process(env, workdir, cleanup)
        servers = {"api": api}
        servers["worker"] = start(
            "worker",
            [m2m_command(), "worker", "--concurrency", "2"],
            env,
            workdir,
            CELERY_READY,
            cleanup,
        )
        schedule = workdir / "beat-schedule"
        servers["beat"] = start(
            "beat",
            [m2m_command(), "beat", "--schedule-file", str(schedule)],
            env,
            workdir,
            BEAT_READY,
            cleanup,
        )
        client = ServiceClient(service_url, TENANT_ID)
        cleanup.callback(client.close)
        client.authenticate_vendor(VENDOR_CLIENT_ID, env["M2M_VENDOR_SECRET"])
        client.create_tenant()
        role_id = client.create_role()
        client.set_strategy("ClientCredentials")
        exchange_credential = client.create_client_credential(role_id)
        chains = [
            client.exchange(*client.create_client_credential(role_id))["refresh_token"]
            for _ in range(args.concurrency)
        ]
        jwt = client.exchange(*exchange_credential)["access_token"]
        minutes = args.soak
        print(
            f"soak: {minutes:g} min of mixed traffic at {args.rate:g} req/s, "
            f"{args.concurrency} in flight at most; started {datetime.now(UTC):%H:%M:%S} UTC"
        )
        observed = asyncio.run(
            soak(
                args,
                service_url,
                client.tenant_headers,
                exchange_credential,
                jwt,
                chains,
                role_id,
                servers,
                database,
            )
        )
        runs = asyncio.run(job_runs(args.postgres, database))
        worker_processes = len(worker_pids(servers["worker"].pid or 0)) + 1  # + beat
        figures, minute_lines = summarise(observed, runs, worker_processes, minutes)
        picture = RESULTS / "soak.png"
        draw(observed, picture)
        preamble = [
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_note()} · {minutes:g} min at "
            f"{args.rate:g} req/s ({args.concurrency} in flight at most), a Python client "
            f"(httpx) on the same machine · `m2m serve --workers {WORKERS}`, `m2m worker "
            "--concurrency 2`, `m2m beat`. Mix: "
            + ", ".join(f"{kind} {share:.1%}" for kind, share in MIX)
            + f". Curve: `{picture.relative_to(REPO)}`.",
        ]
        text = render_figures("Soak", preamble, figures)
        text += "\n" + "\n".join(minute_lines) + "\n"
        args.output.write_text(text)
        print()
        print(text)
        print(f"soak: written to {args.output} and {picture}")
        return 0 if all(figure.met is not False for figure in figures) else 1


async def soak(
    args: argparse.Namespace,
    service_url: str,
    vendor_headers: dict[str, str],
    exchange_credential: tuple[str, str],
    jwt: str,
    chains: list[str],
    role_id: str,
    servers: dict[str, Server],
    database: str,
) -> Observations:
    observed = Observations()
    until = time.monotonic() + args.soak * 60
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=service_url, timeout=30, limits=limits) as http:
        traffic = Traffic(http, vendor_headers, exchange_credential, jwt, chains, role_id)
        await asyncio.gather(
            load(traffic, observed, args, until),
            sample(servers, observed, args, database, until),
        )
    return observed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("soak: interrupted; stopped the processes and removed the database", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
