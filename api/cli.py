"""The `m2m` command: serve, dev, migrate, worker, beat and keys."""

from __future__ import annotations

import base64
import errno
import logging
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from domain.settings import ConfigError, Mode, Settings, load_settings

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    click.echo(f"m2m: {message}", err=True)
    sys.exit(2)


def _settings(mode: Mode) -> Settings:
    try:
        return load_settings(os.environ, mode=mode)
    except ConfigError as error:
        _fail(f"configuration error: {error}")


def _migrate(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    from domain.schema import upgrade_to_head

    try:
        created = upgrade_to_head(
            settings.database_url, transaction_pooling=settings.database_transaction_pooling
        )
    except (OSError, ConnectionError) as error:
        _fail(f"cannot reach the database named by M2M_DATABASE_URL: {error}")
    if created:
        click.echo(f"m2m: created the database {make_url(settings.database_url).database}")


def _preflight(settings: Settings) -> None:
    """Start the services once before forking workers, so a bad setup is one clear line."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from api.app import start_services
    from domain.keys import MasterKeyMismatch

    async def check() -> None:
        services = await start_services(settings)
        await services.close()

    try:
        asyncio.run(check())
    except MasterKeyMismatch as error:
        _fail(str(error))
    except (OSError, ConnectionError) as error:
        _fail(f"cannot reach the database named by M2M_DATABASE_URL: {error}")
    except DBAPIError as error:
        if "does not exist" in str(error.orig):
            _fail("the database has no schema yet: run `m2m migrate` or `m2m serve --migrate`")
        _fail(f"the database named by M2M_DATABASE_URL refused: {error.orig}")


def run_uvicorn(
    app: Callable[[], Any],
    *,
    host: str,
    port: int,
    readable_logs: bool = False,
    sockets: list[socket.socket] | None = None,
) -> None:
    """One uvicorn process (`m2m dev`) with the service's options, serving `sockets` bound
    beforehand; its own lines (startup, access, errors) in the service's log format."""
    import uvicorn

    from domain.logs import log_config

    config = uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        # The app reads X-Forwarded-For itself, from the proxies M2M_TRUSTED_PROXIES names only:
        # uvicorn's own handling would let any client behind a trusted address pick its address.
        proxy_headers=False,
        server_header=False,
        # The app writes the access lines itself (api/request_ids.py), as under `m2m serve`.
        access_log=False,
        log_level="info",
        log_config=log_config(readable=readable_logs),
    )
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)


# How long a stopping worker waits for the requests in flight before it is killed.
DRAIN_SECONDS = 30


def run_granian(target: str, *, host: str, port: int, workers: int) -> None:
    """Serve the ASGI app factory `target` ("module:function") with Granian: `workers`
    processes, each accepting from the one listening socket in Granian's own (Rust) accept
    loop, so that connections spread over the workers as they come. On SIGTERM or SIGINT a
    worker stops accepting, answers the requests in flight (up to DRAIN_SECONDS), then exits;
    a worker that dies is started again. Granian's lines leave through the service's log
    format; the access lines are the app's own (api/request_ids.py)."""
    from granian.constants import Interfaces
    from granian.server import Server

    from domain.logs import log_config

    server = Server(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        backlog=2048,
        log_dictconfig=log_config(),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=DRAIN_SECONDS,
    )
    server.serve()


@click.group()
@click.version_option(package_name="m2m-tokens", prog_name="m2m", message="%(prog)s %(version)s")
def main() -> None:
    """m2m-tokens: machine-to-machine tokens, Frontegg-compatible and OAuth 2.0."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--migrate", "migrate_first", is_flag=True, help="Migrate the database first.")
def serve(host: str, port: int, workers: int, migrate_first: bool) -> None:
    """Run the API (Granian) against PostgreSQL and Redis."""
    from domain.logs import configure_logging

    settings = _settings("serve")
    if migrate_first:
        _migrate(settings)
    configure_logging()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics sums the counters of every worker process through this directory. Set
        # before the app is first imported: the workers are forked from this process, and
        # prometheus_client chooses how it counts when it is imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="m2m-metrics-")
    _preflight(settings)
    # Log lines like every other line serve writes: one JSON object each, for the collector.
    for line in serve_addresses(settings, host=host, port=port):
        logging.getLogger("m2m.serve").info(line)
    run_granian("api.app:create_app_from_environment", host=host, port=port, workers=workers)


def serve_addresses(settings: Settings, *, host: str, port: int) -> list[str]:
    """What `m2m serve` says on start: where the API listens, its reference, and the console
    when enabled."""
    from api.reference import PATH

    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    lines = [f"m2m serve: the API at {base}", f"m2m serve: the API reference at {base}{PATH}"]
    if settings.console_enabled:
        lines.append(f"m2m serve: the vendor's console at {base}/console")
    return lines


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data",
    "data_dir",
    default=".m2m",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite database and the generated credentials live.",
)
def dev(port: int, data_dir: Path) -> None:
    """Run the whole service in one process on 127.0.0.1: SQLite, no PostgreSQL or Redis."""
    from functools import partial

    from api.app import create_app
    from api.dev import DataDirectoryError, banner, first_start_settings, open_data_directory
    from api.dev_sessions import trusting_local_sessions
    from domain.logs import configure_logging

    # Before anything is made or printed: a start that cannot serve leaves no trace.
    listener = _listen("127.0.0.1", port)
    try:
        issuer = first_start_settings(os.environ, port=port).issuer
        environment = open_data_directory(data_dir, issuer=issuer)
        lock = environment.lock()
        settings = environment.settings(os.environ, port=port)
        settings = trusting_local_sessions(settings, environment.path)
    except DataDirectoryError as error:
        _fail(str(error))
    except ConfigError as error:
        _fail(f"configuration error: {error}")
    click.echo(banner(environment, settings, port=port))
    click.echo(_portal_line(settings, data_dir, port))
    _migrate_dev(settings)
    # Readable lines for a person at a terminal; JSON when stderr goes to a file or a collector.
    readable = sys.stderr.isatty()
    configure_logging(readable=readable)
    _preflight(settings)
    run_uvicorn(
        partial(create_app, settings),
        host="127.0.0.1",
        port=port,
        readable_logs=readable,
        sockets=[listener],
    )
    os.close(lock)


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or one line saying why there is none."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: a port left in TIME_WAIT by the previous start is free to take again.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            _fail(f"port {port} on {host} is in use: stop what listens there, or choose --port")
        _fail(f"cannot listen on {host}:{port}: {error.strerror}")
    return listener


def _portal_line(settings: Settings, data_dir: Path, port: int) -> str:
    from api.dev_sessions import LOCAL_SESSION_ISSUER

    if settings.user_jwt_issuer != LOCAL_SESSION_ISSUER:
        return "m2m dev: end users sign in to /portal with your M2M_USER_JWT_* issuer's sessions"
    options = "" if (port, str(data_dir)) == (8000, ".m2m") else f" --data {data_dir} --port {port}"
    return (
        "m2m dev: the end users' portal, signed in as anyone (tenant and user made if missing):\n"
        f"  m2m portal-link --tenant acme --user ada@acme.test{options}"
    )


@main.command("portal-link")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id; created if missing.")
@click.option(
    "--user",
    "email",
    required=True,
    help="The user's email; created if missing, holding the six token permissions.",
)
@click.option(
    "--data",
    "data_dir",
    default=".m2m",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The data directory of `m2m dev`.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def portal_link(tenant_id: str, email: str, data_dir: Path, port: int) -> None:
    """Print a /portal link of `m2m dev`, signed in as an end user for an hour (dev only)."""
    import asyncio

    from api.dev import DataDirectoryError
    from api.dev_sessions import existing_dev_directory, portal_link, trusts_its_own_issuer
    from domain.clock import utcnow
    from domain.errors import DomainError

    try:
        environment = existing_dev_directory(data_dir)
        settings = environment.settings(os.environ, port=port)
        if not trusts_its_own_issuer(settings):
            _fail(
                "M2M_USER_JWT_* is set, so m2m dev trusts that issuer only: unset it to use"
                " portal-link"
            )
        link = asyncio.run(
            portal_link(
                environment, settings, tenant_id=tenant_id, email=email, port=port, now=utcnow()
            )
        )
    except DataDirectoryError as error:
        _fail(str(error))
    except ConfigError as error:
        _fail(f"configuration error: {error}")
    except DomainError as error:
        _fail(error.message)
    click.echo(link)
    click.echo(
        f"m2m: signed in as {email} in {tenant_id} for an hour, while m2m dev runs on port {port}",
        err=True,
    )


def _migrate_dev(settings: Settings) -> None:
    from sqlalchemy.exc import DBAPIError

    from domain.schema import upgrade_to_head

    try:
        upgrade_to_head(settings.database_url)
    except DBAPIError as error:
        _fail(f"cannot use the SQLite database {settings.database_url}: {error.orig}")


@main.command()
def migrate() -> None:
    """Create the database if needed and bring its schema to the newest migration."""
    settings = _settings("migrate")
    _migrate(settings)
    click.echo("m2m: database is at the newest migration")


@main.group()
def keys() -> None:
    """Key material."""


@keys.command("master")
def new_master_key() -> None:
    """Print a new random value for M2M_MASTER_KEY."""
    click.echo(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))


def _on_keys_database(work: Callable[[Any], Awaitable[T]], nothing_changed: str) -> T:
    """Run `work(session)` in one transaction on M2M_DATABASE_URL, committed if it returns;
    every failure is one line (ending with `nothing_changed` when a master key cannot read the
    stored keys)."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    from domain.db import create_engine, create_session_factory
    from domain.keys import MasterKeyMismatch

    settings = _settings("keys")

    async def run() -> T:
        engine = create_engine(
            settings.database_url,
            pooled=False,
            transaction_pooling=settings.database_transaction_pooling,
        )
        try:
            async with create_session_factory(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except MasterKeyMismatch as error:
        _fail(f"{error}; {nothing_changed}")
    except (OSError, ConnectionError) as error:
        _fail(f"cannot reach the database named by M2M_DATABASE_URL: {error}")
    except DBAPIError as error:
        if "does not exist" in str(error.orig):
            _fail("the database has no schema yet: run `m2m migrate` first")
        _fail(f"the database named by M2M_DATABASE_URL refused: {error.orig}")


@keys.command("rotate")
def rotate_keys() -> None:
    """A new signing key signs from now on; old keys stay published while their tokens live."""
    from domain.clock import utcnow
    from domain.keys import MasterKey, rotate_signing_key

    master = MasterKey(_settings("keys").master_key)
    kid = _on_keys_database(
        lambda session: rotate_signing_key(session, master, utcnow()), "no key was rotated"
    )
    click.echo(f"m2m: key {kid} signs new tokens; running API processes switch within 30 s")
    if os.environ.get("M2M_REDIS_URL"):
        _tell_revocation_feed(_settings("keys"), {"type": "signingKey", "kid": kid})


def _tell_revocation_feed(settings: Settings, entry: dict[str, Any]) -> None:
    """Publish one entry on the revocation feed; a Redis that cannot be reached is reported,
    not fatal (the change is committed; consumers learn of it otherwise)."""
    import asyncio

    from redis.asyncio import Redis

    from domain.revocations import RevocationFeed

    async def publish() -> None:
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            feed = RevocationFeed(
                redis, settings.redis_prefix, settings.revocation_feed_retention_seconds
            )
            await feed.publish([entry])
        finally:
            await redis.aclose()

    try:
        asyncio.run(publish())
    except Exception as error:
        click.echo(
            f"m2m: the revocation feed was not told ({type(error).__name__}: Redis at "
            "M2M_REDIS_URL unreachable)",
            err=True,
        )


@keys.command("reencrypt")
@click.option(
    "--new-key-env",
    default="M2M_NEW_MASTER_KEY",
    show_default=True,
    metavar="NAME",
    help="The environment variable holding the new master key (never the key itself: "
    "a command-line argument shows in `ps`).",
)
def reencrypt_keys(new_key_env: str) -> None:
    """Seal every stored signing key (and event endpoint secret) with a new master key, in one
    transaction."""
    from domain.events import reencrypt_endpoint_secrets
    from domain.keys import MasterKey, reencrypt_signing_keys
    from domain.settings import read_master_key

    current = _settings("keys").master_key
    try:
        new = read_master_key(os.environ, new_key_env)
    except ConfigError as error:
        _fail(f"configuration error: {error}")
    if new == current:
        _fail(f"{new_key_env} holds the current M2M_MASTER_KEY; nothing was re-encrypted")

    async def reencrypt(session: Any) -> int:
        count = await reencrypt_signing_keys(session, MasterKey(current), MasterKey(new))
        await reencrypt_endpoint_secrets(session, MasterKey(current), MasterKey(new))
        return count

    count = _on_keys_database(reencrypt, "nothing was re-encrypted")
    keys_moved = "1 signing key" if count == 1 else f"{count} signing keys"
    click.echo(
        f"m2m: {keys_moved} re-encrypted with {new_key_env}; restart every API process with it "
        "as M2M_MASTER_KEY"
    )


@main.command()
@click.option("--concurrency", type=click.IntRange(1, 64), help="Processes (default: cores).")
def worker(concurrency: int | None) -> None:
    """Run a Celery worker: expiry, pruning, deletion cascades, M2M switch, cache reconcile."""
    settings = _settings("worker")
    import workers.tasks  # noqa: F401  (registers the tasks)
    from workers.celery_app import app, configure

    configure(app, settings)
    argv = ["worker", "--loglevel=INFO", "--queues=m2m"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


@main.command()
@click.option(
    "--schedule-file",
    default=os.path.join(tempfile.gettempdir(), "m2m-beat-schedule"),
    show_default=True,
    help="Where beat keeps the time of each job's last start.",
)
def beat(schedule_file: str) -> None:
    """Run Celery beat: schedules the periodic jobs (run exactly one)."""
    settings = _settings("worker")
    from workers.celery_app import app, configure

    configure(app, settings)
    app.start(["beat", "--loglevel=INFO", f"--schedule={schedule_file}"])
