"""Several hosts: three `m2m serve` on different ports (standing for
hosts) and two Celery workers on one PostgreSQL and Redis; under load, an access token is
deleted through one of them and each of the three is polled in a tight loop until it refuses
the token. Repeated; the distribution of those delays against the 100 ms target.

    python bench/hosts.py [--repeats 50] [--connections 2]

See bench/README.md ("Several hosts").
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from loadgen import Load, LoadResult, run_wrk
from observe import Figure, machine_note, percentile, render_figures
from run import (
    TENANT_ID,
    VENDOR_CLIENT_ID,
    m2m_command,
    migrated_scratch,
    start_service_process,
)
from seed import VALIDATE, ServiceClient, expect
from stack import Server

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HOSTS = 3
CELERY_WORKERS = 2
TARGET_MS = 100.0
POLL_GIVE_UP_SECONDS = 5.0
# Polls after the first refusal: a refused token must stay refused.
CONFIRMING_POLLS = 5
TENANT_ACCESS_TOKENS = "/identity/resources/tenants/access-tokens/v1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="deletions measured")
    parser.add_argument(
        "--connections", type=int, default=2, help="wrk connections of load on each host"
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--transaction-pooling",
        action="store_true",
        help="--postgres is a pooler in transaction mode (PgBouncer's pool_mode = transaction)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=RESULTS / "hosts.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.connections < 0:
        parser.error("--repeats must be positive, --connections not negative")
    args.postgres = args.postgres.rstrip("/")
    return args


@dataclass
class Poll:
    """One host polled until it refuses the token."""

    refused_at: float | None = None  # monotonic time the first refusing answer arrived
    status: int = 0  # that answer's status
    accepted_again: int = 0  # 200s after the first refusal (must stay 0)
    accepted_after: float = 0.0  # seconds until the new token was first accepted here
    never_accepted: bool = False
    poll_ms: float = 0.0  # the refusing poll's own latency (part of the delay)


def poll(url: str, token: str, ready: threading.Barrier, result: Poll) -> None:
    with httpx.Client(base_url=url, timeout=POLL_GIVE_UP_SECONDS) as http:
        headers = {"X-API-KEY": token}
        # Accepted on this host first (a token made through another host can be refused for a
        # moment: README "Validity cache"), so that its refusal below is the deletion's.
        started = time.monotonic()
        while http.post(VALIDATE, headers=headers).status_code != 200:
            if time.monotonic() - started > POLL_GIVE_UP_SECONDS:
                result.never_accepted = True
                break
        result.accepted_after = time.monotonic() - started
        ready.wait()
        if result.never_accepted:
            return
        deadline = time.monotonic() + POLL_GIVE_UP_SECONDS + 1
        while time.monotonic() < deadline:
            poll_sent = time.monotonic()
            status = http.post(VALIDATE, headers=headers).status_code
            if status != 200:
                result.refused_at, result.status = time.monotonic(), status
                result.poll_ms = (result.refused_at - poll_sent) * 1000
                break
        for _ in range(CONFIRMING_POLLS):
            if http.post(VALIDATE, headers=headers).status_code == 200:
                result.accepted_again += 1


def one_deletion(clients: list[ServiceClient], deleting: int) -> tuple[float, float, list[Poll]]:
    """Create a token, warm it on every host, delete it through `deleting` while polling all.
    (when the DELETE was sent, when its answer arrived, each host's poll)."""
    creator = clients[deleting]
    created = expect(
        creator.http.post(
            TENANT_ACCESS_TOKENS, json={"description": "hosts"}, headers=creator.tenant_headers
        ),
        201,
    )
    token, token_id = created["secret"], created["id"]
    polls = [Poll() for _ in clients]
    ready = threading.Barrier(len(clients) + 1)
    threads = [
        threading.Thread(target=poll, args=(client.base_url, token, ready, result))
        for client, result in zip(clients, polls, strict=True)
    ]
    for thread in threads:
        thread.start()
    ready.wait()  # every poller has seen the token accepted, and polls from now on
    time.sleep(0.02)  # they poll (answered 200) before the deletion
    sent = time.monotonic()
    expect(
        creator.http.delete(f"{TENANT_ACCESS_TOKENS}/{token_id}", headers=creator.tenant_headers),
        200,
    )
    answered = time.monotonic()
    for thread in threads:
        thread.join()
    return sent, answered, polls


def background_load(url: str, token: str, seconds: int, connections: int) -> LoadResult:
    load = Load(url=url + VALIDATE, method="POST", headers={"X-API-KEY": token}, body="")
    return run_wrk(
        load,
        connections=connections,
        seconds=seconds,
        transcript=RESULTS / f"hosts-wrk-{url.rsplit(':', 1)[1]}.txt",
    )


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(4)
    database = f"m2m_bench_{run_id}"
    prefix = f"m2m-bench:{run_id}:"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        env, workdir = migrated_scratch(args, cleanup, "hosts", database, prefix)
        urls = [
            start_service_process(env, workdir, cleanup, log_name=f"host-{n}.log", workers=1)[0]
            for n in range(1, HOSTS + 1)
        ]
        for number in range(1, CELERY_WORKERS + 1):
            worker = Server(
                f"worker {number}",
                [m2m_command(), "worker", "--concurrency", "1"],
                env=env,
                cwd=REPO,
                log=workdir / f"worker-{number}.log",
                ready_line="ready.",
            )
            cleanup.callback(worker.stop)
            worker.start(1)
        clients = [ServiceClient(url, TENANT_ID) for url in urls]
        for client in clients:
            cleanup.callback(client.close)
            client.authenticate_vendor(VENDOR_CLIENT_ID, env["M2M_VENDOR_SECRET"])
        clients[0].create_tenant()
        clients[0].set_strategy("AccessToken")
        time.sleep(0.5)  # every host sees the strategy
        loaded = clients[0].create_access_token()

        # Load on every host for the whole measurement (a generous estimate of its length).
        seconds = min(300, 10 + 3 * args.repeats)
        loads: list[LoadResult | None] = [None] * HOSTS
        load_threads = []
        if args.connections:
            for number, url in enumerate(urls):

                def measure(number: int = number, url: str = url) -> None:
                    loads[number] = background_load(url, loaded, seconds, args.connections)

                load_threads.append(threading.Thread(target=measure))
            for thread in load_threads:
                thread.start()
            time.sleep(1)
        started = time.monotonic()

        # Lags in ms per host, from the DELETE's answer (the deletion committed), and from
        # when it was sent.
        lags: list[list[float]] = [[] for _ in urls]
        from_sent: list[list[float]] = [[] for _ in urls]
        unrefused = accepted_again = never_accepted = 0
        accepted_after: list[float] = []
        poll_latencies: list[float] = []
        statuses: set[int] = set()
        for repeat in range(args.repeats):
            if time.monotonic() - started > seconds - 5:
                print(f"hosts: stopped after {repeat} deletions: the load is ending")
                break
            sent, answered, polls = one_deletion(clients, repeat % HOSTS)
            for host, result in enumerate(polls):
                accepted_again += result.accepted_again
                accepted_after.append(result.accepted_after * 1000)
                never_accepted += result.never_accepted
                if result.never_accepted:
                    continue
                if result.refused_at is None:
                    unrefused += 1
                    continue
                statuses.add(result.status)
                lags[host].append(max(0.0, result.refused_at - answered) * 1000)
                poll_latencies.append(result.poll_ms)
                from_sent[host].append((result.refused_at - sent) * 1000)
        for thread in load_threads:
            thread.join()

    figures = []
    for number, (url, load) in enumerate(zip(urls, loads, strict=True), 1):
        if load is not None:
            figures.append(
                Figure(
                    f"load on host {number} ({url}), {args.connections} connections",
                    f"{load.successes_per_second:,.0f} validations/s, p99 {load.p99_ms:.1f} ms"
                    + (f"; failed {load.failed_answers}" if load.failed_status else ""),
                )
            )
    every = [lag for host in lags for lag in host]
    for number, host in enumerate(lags, 1):
        figures.append(
            Figure(
                f"host {number}: refused after the DELETE answered, p50 / p99 / max ms "
                f"({len(host)} deletions)",
                f"{percentile(host, 0.5):.1f} / {percentile(host, 0.99):.1f} / "
                f"{max(host, default=0):.1f}",
                f"< {TARGET_MS:g} ms",
                bool(host) and max(host) < TARGET_MS,
            )
        )
    within = sum(1 for lag in every if lag < TARGET_MS) / max(len(every), 1)
    figures.append(
        Figure(
            f"all hosts: refused within {TARGET_MS:g} ms of the DELETE's answer",
            f"{within:.1%} of {len(every)}",
        )
    )
    figures.append(
        Figure(
            "the refusing poll's own latency (included above), p50 / p99 / max ms",
            f"{percentile(poll_latencies, 0.5):.1f} / {percentile(poll_latencies, 0.99):.1f} / "
            f"{max(poll_latencies, default=0):.1f}",
        )
    )
    sent_all = [lag for host in from_sent for lag in host]
    figures.append(
        Figure(
            "all hosts: from the DELETE's answer, p50 / p99 / max ms",
            f"{percentile(every, 0.5):.1f} / {percentile(every, 0.99):.1f} / "
            f"{max(every, default=0):.1f}",
            f"p99 < {TARGET_MS:g} ms",
            bool(every) and percentile(every, 0.99) < TARGET_MS,
        )
    )
    figures.append(
        Figure(
            "all hosts: from the DELETE being sent, p50 / p99 / max ms",
            f"{percentile(sent_all, 0.5):.1f} / {percentile(sent_all, 0.99):.1f} / "
            f"{max(sent_all, default=0):.1f}",
        )
    )
    figures.append(
        Figure(
            f"never refused within {POLL_GIVE_UP_SECONDS:g} s",
            str(unrefused),
            "0",
            unrefused == 0,
        )
    )
    figures.append(
        Figure(
            f"accepted again after a refusal ({CONFIRMING_POLLS} polls each)",
            str(accepted_again),
            "0",
            accepted_again == 0,
        )
    )
    figures.append(
        Figure(
            "a new token, first accepted by each host after (with that request's latency), "
            "p50 / p99 / max ms",
            f"{percentile(accepted_after, 0.5):.1f} / {percentile(accepted_after, 0.99):.1f} / "
            f"{max(accepted_after, default=0):.1f}"
            + (
                f"; {never_accepted} never within {POLL_GIVE_UP_SECONDS:g} s"
                if never_accepted
                else ""
            ),
        )
    )
    preamble = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_note()} · {HOSTS} `m2m serve "
        f"--workers 1` on ports of 127.0.0.1, {CELERY_WORKERS} `m2m worker --concurrency 1`, "
        f"one PostgreSQL and Redis. Each deletion: a new access token, validated once on each "
        "host, then polled on all three (a Python thread each, keep-alive, one request at a "
        "time) while the DELETE goes through one host in turn; a delay ends when a poll's "
        f"refusing answer (status {sorted(statuses) or '—'}) arrives, so it includes that "
        "poll's own latency.",
    ]
    text = render_figures("Several hosts", preamble, figures)
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
        print("hosts: interrupted; stopped the servers and removed the database", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
