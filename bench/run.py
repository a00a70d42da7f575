"""The benchmark, in one command: a throwaway stack and the peer, wrk loads side by side, one
Markdown table.

    python bench/run.py [--duration 10] [--connections 4,64] [--no-peer]

See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadgen import (
    REQUEST_TIMEOUT_SECONDS,
    Argon2Bound,
    Load,
    LoadResult,
    WrkFailed,
    WrkMissing,
    measure_argon2_bound,
    run_wrk,
    wrk_version,
)
from peer import DEFAULT_SOURCE, Peer, PeerFailed
from peer import KEY_PREFIX as PEER_KEY_PREFIX
from peer import install as install_peer
from peer import start as start_peer
from report import PEER_OF, Kind, PeerLoad, Row, render
from seed import ACTIVE, EXCHANGE, REFRESH, VALIDATE, RouteFailed, RouteMissing, ServiceClient
from stack import (
    Server,
    ServerFailed,
    create_database,
    delete_redis_keys,
    drop_database,
    free_port,
    seed_access_tokens,
)

from domain.secrets import Argon2Parameters
from domain.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
HOST = "127.0.0.1"
WORKERS = 2
TENANT_ID = "bench"
VENDOR_CLIENT_ID = "bench-vendor"

# Exchanges are rate limited per clientId and per address; the benchmark must not hit that.
# The names the exchange work announced, plus any M2M_*LIMIT* variable the service reads.
RATE_LIMIT_VARIABLES = ("M2M_EXCHANGE_LIMIT_PER_CLIENT", "M2M_EXCHANGE_LIMIT_PER_ADDRESS")
RATE_LIMIT_PATTERN = re.compile(r"\bM2M_[A-Z0-9_]*LIMIT[A-Z0-9_]*\b")
HIGH_RATE_LIMIT = 1_000_000
SETTLE_SECONDS = 0.2
SETTLE_MAX_SECONDS = 30
# load_settings refuses out-of-range values with this message: retry with the highest allowed.
OUT_OF_RANGE = re.compile(r"(?P<name>M2M_[A-Z0-9_]+): must be between \d+ and (?P<high>\d+)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=_bounded(1, 300), default=10, help="seconds per measurement"
    )
    parser.add_argument(
        "--warmup", type=_bounded(0, 60), default=1, help="seconds of discarded load before each"
    )
    parser.add_argument(
        "--connections",
        type=_connection_levels,
        default=[4, 64],
        help="comma-separated connection counts (default 4,64)",
    )
    parser.add_argument(
        "--peer",
        type=Path,
        default=DEFAULT_SOURCE,
        help="the peer's source (oidc-provider), copied to a temporary directory to run",
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="measure without the peer (no ratios to it)"
    )
    parser.add_argument(
        "--peer-redis",
        default="redis://127.0.0.1:6379/7",
        help="the Redis database the peer keeps its tokens in (its keys under oidc: are "
        "deleted before and after the run, nothing else)",
    )
    parser.add_argument(
        "--active-tokens",
        type=_bounded(1, 1_000_000),
        default=100_000,
        help="access tokens seeded for /active",
    )
    parser.add_argument(
        "--only",
        type=_kinds,
        default=None,
        metavar="KIND[,KIND]",
        help="measure only these, beside the baseline: "
        + ", ".join(kind.value for kind in Kind if kind is not Kind.BASELINE),
    )
    parser.add_argument("--argon2-samples", type=_bounded(5, 1000), default=50)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server (a user that may create databases), without a database name",
    )
    parser.add_argument(
        "--transaction-pooling",
        action="store_true",
        help="--postgres is a pooler in transaction mode (PgBouncer's pool_mode = transaction):"
        " the service runs with M2M_DATABASE_TRANSACTION_POOLING=true",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=BENCH / "results" / "results.md")
    args = parser.parse_args(argv)
    if not args.postgres.startswith("postgresql://"):
        parser.error("--postgres must be a postgresql:// URL")
    args.postgres = args.postgres.rstrip("/")
    return args


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _connection_levels(text: str) -> list[int]:
    levels = [_bounded(1, 256)(part) for part in text.split(",") if part.strip()]
    if not levels:
        raise argparse.ArgumentTypeError("give at least one connection count")
    return sorted(set(levels))


def _kinds(text: str) -> set[Kind]:
    try:
        return {Kind(part.strip()) for part in text.split(",") if part.strip()} | {Kind.BASELINE}
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- the stack -------------------------------------------------------------------------------


def rate_limit_variables() -> tuple[list[str], list[str]]:
    """(the variables to set, those of them the service's code mentions today)."""
    mentioned: set[str] = set()
    for source in [*(REPO / "domain").glob("*.py"), *(REPO / "api").rglob("*.py")]:
        mentioned.update(RATE_LIMIT_PATTERN.findall(source.read_text(errors="replace")))
    return sorted(mentioned | set(RATE_LIMIT_VARIABLES)), sorted(mentioned)


def service_environment(args: argparse.Namespace, database: str, prefix: str) -> dict[str, str]:
    # Inherited M2M_* settings would make the run depend on the shell; argon2's are kept on
    # purpose, so that other parameters can be measured (the bound uses the same ones).
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("M2M_") or name.startswith("M2M_ARGON2_")
    }
    server_url = args.postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    env.update(
        M2M_DATABASE_URL=f"{server_url}/{database}",
        M2M_REDIS_URL=args.redis,
        M2M_REDIS_PREFIX=prefix,
        M2M_VENDOR_CLIENT_ID=VENDOR_CLIENT_ID,
        M2M_VENDOR_SECRET=secrets.token_urlsafe(24),
        M2M_MASTER_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
    )
    for name in rate_limit_variables()[0]:
        env[name] = str(HIGH_RATE_LIMIT)
    if getattr(args, "transaction_pooling", False):
        env["M2M_DATABASE_TRANSACTION_POOLING"] = "true"
    return env


def migrated_scratch(
    args: argparse.Namespace, cleanup: ExitStack, tag: str, database: str, prefix: str
) -> tuple[dict[str, str], Path]:
    """A database of the run's own, migrated, and a Redis prefix of its own, both forgotten when
    `cleanup` closes; the service's environment for them, and a scratch folder for its logs."""
    workdir = Path(tempfile.mkdtemp(prefix=f"m2m-{tag}-"))
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    print(f"{tag}: database {database}, Redis prefix {prefix!r}, logs in {workdir}")
    create_database(args.postgres, database)

    def forget() -> None:
        with quietly("dropping the database"):
            drop_database(args.postgres, database)
        with quietly("deleting the Redis keys"):
            delete_redis_keys(args.redis, prefix)

    cleanup.callback(forget)
    env = service_environment(args, database, prefix)
    subprocess.run(
        [m2m_command(), "migrate"],
        env=env,
        cwd=REPO,
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    return env, workdir


def m2m_command() -> str:
    beside_python = Path(sys.executable).parent / "m2m"
    found = str(beside_python) if beside_python.exists() else shutil.which("m2m")
    if found is None:
        sys.exit("bench: the `m2m` command is not installed: pip install -e '.[dev]'")
    return found


def start_service(env: dict[str, str], workdir: Path, cleanup: ExitStack) -> str:
    """`m2m serve --workers 2` on a free port; its base URL."""
    return start_service_process(env, workdir, cleanup)[0]


def start_service_process(
    env: dict[str, str],
    workdir: Path,
    cleanup: ExitStack,
    *,
    log_name: str = "service.log",
    workers: int = WORKERS,
) -> tuple[str, Server]:
    """`m2m serve --workers N` on a free port: its base URL, and its process."""
    # Registered first so that it runs last, once the server has stopped.
    cleanup.callback(save_service_errors, workdir / log_name)
    for _ in range(3):
        port = free_port()
        server = Server(
            "m2m serve",
            [
                m2m_command(),
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=REPO,
            log=workdir / log_name,
        )
        cleanup.callback(server.stop)
        try:
            server.start(workers)
        except ServerFailed as failure:
            refused = OUT_OF_RANGE.search(failure.log_tail)
            if refused is None or refused["name"] not in rate_limit_variables()[0]:
                raise
            env[refused["name"]] = refused["high"]
            continue
        return f"http://{HOST}:{port}", server
    raise ServerFailed("m2m serve", "its rate-limit settings were refused three times")


def start_baseline(env: dict[str, str], workdir: Path, cleanup: ExitStack) -> str:
    port = free_port()
    server = Server(
        "baseline",
        [
            sys.executable,
            str(BENCH / "baseline.py"),
            *("--host", HOST, "--port", str(port), "--workers", str(WORKERS)),
        ],
        env=env,
        cwd=REPO,
        log=workdir / "baseline.log",
    )
    cleanup.callback(server.stop)
    server.start(WORKERS)
    return f"http://{HOST}:{port}"


def start_peer_process(
    args: argparse.Namespace, env: dict[str, str], workdir: Path, cleanup: ExitStack
) -> Peer:
    print(f"bench: installing the peer from {args.peer} (npm ci in a temporary copy)")
    installed = install_peer(args.peer, workdir)

    def forget_peer_keys() -> None:
        with quietly("deleting the peer's Redis keys"):
            deleted = delete_redis_keys(args.peer_redis, PEER_KEY_PREFIX)
            print(f"bench: deleted {deleted} Redis keys of the peer")

    # Registered before its stop, so that it runs after it (the last registered runs first).
    cleanup.callback(forget_peer_keys)
    peer_env = {name: value for name, value in env.items() if not name.startswith("M2M_")}
    log = workdir / "peer.log"
    peer = start_peer(installed, redis_url=args.peer_redis, workers=WORKERS, log=log, env=peer_env)
    cleanup.callback(peer.server.stop)
    return peer


ACCESS_LOG_LINE = re.compile(r'^\{.*"logger": "m2m\.access"')


def save_service_errors(log: Path) -> None:
    """Keep what the service said besides its access log (errors, tracebacks) with the results."""
    if log.exists():
        with log.open(errors="replace") as lines:
            kept = [line for line in lines if not ACCESS_LOG_LINE.match(line)]
        (BENCH / "results" / "service.log").write_text("".join(kept))


@contextmanager
def quietly(what: str) -> Iterator[None]:
    """Cleanup must go on after one step fails: say so, and carry on."""
    try:
        yield
    except Exception as error:
        print(f"bench: {what} failed: {error}", file=sys.stderr)


# --- the service's state for the loads -------------------------------------------------------


@dataclass
class Seeded:
    access_token: str
    validate_credential: tuple[str, str]
    exchange_credential: tuple[str, str]
    refresh_credentials: list[tuple[str, str]]
    shared_credential: tuple[str, str]


def seed(
    client: ServiceClient, args: argparse.Namespace, vendor_secret: str, database: str
) -> Seeded:
    client.authenticate_vendor(VENDOR_CLIENT_ID, vendor_secret)
    client.create_tenant()
    seed_access_tokens(args.postgres, database, TENANT_ID, args.active_tokens)
    role_id = client.create_role()
    client.set_strategy("ClientCredentials")
    validate_credential = client.create_client_credential(role_id)
    exchange_credential = client.create_client_credential(role_id)
    # A credential keeps at most 100 usable refresh tokens: one credential per connection.
    refresh_credentials = [
        client.create_client_credential(role_id) for _ in range(max(args.connections))
    ]
    # A fleet of machines on one account credential: every connection refreshes its own chain.
    shared_credential = client.create_client_credential(role_id)
    client.set_strategy("AccessToken")
    access_token = client.create_access_token()
    return Seeded(
        access_token,
        validate_credential,
        exchange_credential,
        refresh_credentials,
        shared_credential,
    )


@dataclass(frozen=True)
class Measurement:
    title: str
    kind: Kind
    # Each measurement runs under the strategy that created its tokens.
    strategy: str | None
    # Probes the route once (RouteMissing when it is not built yet) and describes the load.
    prepare: Callable[[int], Load]


def measurements(
    client: ServiceClient, seeded: Seeded, baseline_url: str, workdir: Path, active_tokens: int
) -> list[Measurement]:
    service = client.base_url

    def baseline(connections: int) -> Load:
        return Load(url=f"{baseline_url}/", method="POST", body="")

    def validate_access_token(connections: int) -> Load:
        headers = {"X-API-KEY": seeded.access_token}
        client.validate(headers)
        return Load(url=service + VALIDATE, method="POST", headers=headers, body="")

    def validate_client_jwt(connections: int) -> Load:
        jwt = client.exchange(*seeded.validate_credential)["access_token"]
        headers = {"Authorization": f"Bearer {jwt}"}
        client.validate(headers)
        return Load(url=service + VALIDATE, method="POST", headers=headers, body="")

    def exchange(connections: int) -> Load:
        client_id, secret = seeded.exchange_credential
        client.exchange(client_id, secret)
        return Load(
            url=service + EXCHANGE,
            method="POST",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"clientId": client_id, "secret": secret}),
        )

    def chains(credentials: list[tuple[str, str]]) -> Load:
        probe = client.exchange(*credentials[0])["refresh_token"]
        client.refresh(probe)
        # One fresh token per connection, and one for wrk's check.
        chain_starts = [
            client.exchange(*credential)["refresh_token"]
            for credential in [*credentials, credentials[0]]
        ]
        tokens_file = workdir / "refresh-tokens.txt"
        tokens_file.write_text("\n".join(chain_starts) + "\n")
        return Load(
            url=service + REFRESH,
            method="POST",
            script="refresh.lua",
            env={"BENCH_REFRESH_TOKENS": str(tokens_file)},
        )

    def refresh_own_credentials(connections: int) -> Load:
        return chains(seeded.refresh_credentials[:connections])

    def refresh_shared_credential(connections: int) -> Load:
        return chains([seeded.shared_credential] * connections)

    def active(gzip: bool) -> Callable[[int], Load]:
        def prepare(connections: int) -> Load:
            ids, size = client.active_ids(gzip=gzip)
            note = f"{len(ids):,} ids, {size / 1e6:.1f} MB an answer"
            if len(ids) < active_tokens:
                note += f" (fewer than the {active_tokens:,} seeded)"
            encoding = {"Accept-Encoding": "gzip" if gzip else "identity"}
            headers = {**client.vendor_headers, **encoding}
            return Load(url=service + ACTIVE, headers=headers, note=note)

        return prepare

    return [
        Measurement("baseline: constant JSON", Kind.BASELINE, None, baseline),
        Measurement("validate access token", Kind.VALIDATION, "AccessToken", validate_access_token),
        Measurement(
            "validate client-credential JWT",
            Kind.VALIDATION,
            "ClientCredentials",
            validate_client_jwt,
        ),
        Measurement("exchange", Kind.EXCHANGE, "ClientCredentials", exchange),
        Measurement(
            "refresh, a credential per connection",
            Kind.REFRESH,
            "ClientCredentials",
            refresh_own_credentials,
        ),
        Measurement(
            "refresh, chains of one shared credential",
            Kind.REFRESH,
            "ClientCredentials",
            refresh_shared_credential,
        ),
        Measurement(f"/active, {active_tokens:,} tokens", Kind.ACTIVE, None, active(False)),
        # As the SDKs' HTTP clients (requests, axios) ask by default.
        Measurement(
            f"/active, {active_tokens:,} tokens, gzip asked", Kind.ACTIVE, None, active(True)
        ),
    ]


# --- the run ---------------------------------------------------------------------------------


class Runner:
    def __init__(
        self,
        client: ServiceClient,
        args: argparse.Namespace,
        transcript: Path,
        peer: Peer | None,
    ) -> None:
        self.client = client
        self.args = args
        self.transcript = transcript
        self.strategy: str | None = None
        self.peer = peer
        self.peer_results: dict[tuple[PeerLoad, int], LoadResult | None] = {}

    def peer_figure(self, what: PeerLoad, connections: int) -> LoadResult | None:
        """The peer's figure at this connection count, measured when a row first needs it
        (so right before that row: the machine is shared, and its load drifts within a run)."""
        if self.peer is None:
            return None
        key = (what, connections)
        if key not in self.peer_results:
            prepare = {
                PeerLoad.INTROSPECTION: self.peer.introspection,
                PeerLoad.GRANT: self.peer.client_credentials_grant,
            }[what]
            try:
                if self.args.warmup:
                    self._load(prepare(), connections, self.args.warmup)
                result = self._load(prepare(), connections, self.args.duration)
            except (PeerFailed, WrkFailed) as failure:
                print(f"bench: [{connections} conns] {what.value} failed: {failure}")
                result = None
            else:
                print(f"bench: [{connections} conns] {what.value}: {describe_result(result)}")
            self.peer_results[key] = result
        return self.peer_results[key]

    def measure(self, measurement: Measurement, connections: int) -> Row:
        row = Row(measurement.title, measurement.kind, connections)
        peer_load = PEER_OF.get(measurement.kind)
        if peer_load is not None:
            row.peer = self.peer_figure(peer_load, connections)
        try:
            if measurement.strategy and measurement.strategy != self.strategy:
                self.client.set_strategy(measurement.strategy)
                self.strategy = measurement.strategy
                time.sleep(0.2)  # other API processes see a change within 100 ms
            if self.args.warmup:
                self._load(measurement.prepare(connections), connections, self.args.warmup)
            load = measurement.prepare(connections)
            row.result = self._load(load, connections, self.args.duration)
            row.note = load.note
        except RouteMissing as missing:
            row.unavailable = str(missing)
        except (RouteFailed, WrkFailed) as failure:
            row.failure = str(failure)
        return row

    def _load(self, load: Load, connections: int, seconds: int) -> LoadResult:
        result = run_wrk(load, connections=connections, seconds=seconds, transcript=self.transcript)
        # wrk leaves one request per connection unanswered; the server still works on them.
        # Let it finish, so that they do not weigh on the next load (it can be /active's).
        in_flight = result.p99_ms / 1000 if result.requests else seconds + REQUEST_TIMEOUT_SECONDS
        time.sleep(min(SETTLE_MAX_SECONDS, SETTLE_SECONDS + in_flight))
        return result


def describe(row: Row) -> str:
    if row.result is None:
        return f"not available ({row.unavailable})" if row.unavailable else f"failed: {row.failure}"
    return describe_result(row.result)


def describe_result(result: LoadResult) -> str:
    if result.requests == 0:
        return "no answer completed during the run"
    failed = [result.failed_answers] if result.failed_answers else []
    if result.failed_socket:
        failed.append(f"{result.failed_socket} socket errors")
    return (
        f"{result.successes_per_second:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms" + (f"; failed: {', '.join(failed)}" if failed else "")
    )


def preamble(
    args: argparse.Namespace, wrk: str, env: dict[str, str], mentioned_limits: list[str]
) -> list[str]:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain"):
        commit += " with uncommitted changes"
    limits = ", ".join(f"`{name}={env[name]}`" for name in rate_limit_variables()[0])
    read = ", ".join(f"`{name}`" for name in mentioned_limits) or "none of them yet"
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · commit {commit} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · {wrk}",
        "",
        f"Each figure: {wrk.split(' [')[0]}, 1 thread, {args.duration} s after a {args.warmup} s "
        f"warm-up, keep-alive connections to {HOST}, on the same machine as the servers. "
        f"Service and baseline: Granian with {WORKERS} worker processes, started the same way "
        f"(`m2m serve --workers {WORKERS}`, `bench/baseline.py --workers {WORKERS}`). "
        + (
            "Peer: not run (--no-peer). "
            if args.no_peer
            else f"Peer: oidc-provider (Node) with WORKERS={WORKERS} ADAPTER=redis, each of its "
            "figures measured right before the first row compared with it. "
        )
        + "req/s counts answers below 400; a row with more than 1% failed requests is invalid.",
        "",
        f"Service: a fresh database with {args.active_tokens:,} access tokens seeded for "
        f"`/active`; exchange rate limits raised with {limits} (read by the service: {read}).",
    ]
    return lines


def _git(*arguments: str) -> str:
    try:
        return subprocess.run(
            ["git", *arguments], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM must run the cleanup like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(args)
    except (WrkMissing, ServerFailed, RouteMissing, RouteFailed, PeerFailed) as error:
        print(f"bench: {error}", file=sys.stderr)
    except subprocess.CalledProcessError as error:
        print(
            f"bench: {' '.join(map(str, error.cmd))} failed ({error.returncode})", file=sys.stderr
        )
    except KeyboardInterrupt:
        print("bench: interrupted; stopped the servers and removed the database", file=sys.stderr)
        return 130
    return 1


def run(args: argparse.Namespace) -> int:
    wrk = wrk_version()
    run_id = secrets.token_hex(4)
    database = f"m2m_bench_{run_id}"
    prefix = f"m2m-bench:{run_id}:"
    results = args.output.parent
    results.mkdir(parents=True, exist_ok=True)
    (BENCH / "results").mkdir(exist_ok=True)
    transcript = results / "wrk-output.txt"
    transcript.write_text("")

    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="m2m-bench-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        print(f"bench: database {database}, Redis prefix {prefix!r}, logs in {workdir}")

        create_database(args.postgres, database)

        def drop() -> None:
            with quietly(f"dropping database {database}"):
                drop_database(args.postgres, database)

        def forget_keys() -> None:
            with quietly(f"deleting Redis keys {prefix}*"):
                print(f"bench: deleted {delete_redis_keys(args.redis, prefix)} Redis keys")

        cleanup.callback(drop)  # callbacks run last-registered first: servers stop before
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
        print(f"bench: starting m2m serve and the baseline, {WORKERS} workers each")
        service_url = start_service(env, workdir, cleanup)
        baseline_url = start_baseline(env, workdir, cleanup)
        peer = None if args.no_peer else start_peer_process(args, env, workdir, cleanup)

        client = ServiceClient(service_url, TENANT_ID)
        cleanup.callback(client.close)
        print(f"bench: seeding ({args.active_tokens:,} access tokens for /active)")
        seeded = seed(client, args, env["M2M_VENDOR_SECRET"], database)

        settings = load_settings(env, mode="serve")
        parameters = Argon2Parameters(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        bound: Argon2Bound | None = None

        runner = Runner(client, args, transcript, peer)
        rows = []
        plan = measurements(client, seeded, baseline_url, workdir, args.active_tokens)
        if args.only is not None:
            plan = [measurement for measurement in plan if measurement.kind in args.only]
        for connections in args.connections:
            for measurement in plan:
                if measurement.kind is Kind.EXCHANGE and bound is None:
                    # Right before the exchange load, so that both see the same machine (it is
                    # shared, and its load drifts within a run).
                    bound = measure_argon2_bound(parameters, args.argon2_samples)
                    print(
                        f"bench: argon2 bound {bound.verifies_per_second:.1f}/s with "
                        f"{bound.cores} threads verifying at once "
                        f"({bound.verify_seconds * 1000:.1f} ms a verify; "
                        f"{bound.alone_seconds * 1000:.1f} ms alone)"
                    )
                row = runner.measure(measurement, connections)
                rows.append(row)
                print(f"bench: [{connections} conns] {row.title}: {describe(row)}")

        mentioned_limits = rate_limit_variables()[1]
        text, warnings = render(rows, bound, preamble(args, wrk, env, mentioned_limits))
        args.output.write_text(text)
        print()
        print(text)
        print(f"bench: written to {args.output}; wrk's own output in {transcript}")
        for warning in warnings:
            print(f"bench: WARNING: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
