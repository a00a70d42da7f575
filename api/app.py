"""create_app(settings): the Litestar app with its DI providers and exception handlers."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.cors import cors_config, cors_only_where_embedded
from api.dependencies import (
    provide_client_address,
    provide_db_session,
    provide_now,
    provide_services,
)
from api.errors import EXCEPTION_HANDLERS
from api.metrics import count_requests
from api.reference import openapi_config
from api.request_ids import with_request_ids
from api.routes import (
    audits,
    configuration,
    console,
    directory,
    events,
    exchange,
    leaks,
    ops,
    policy,
    portal,
    revocations,
    tokens,
    validation,
    vendor,
    webhooks,
    wellknown,
)
from api.security_headers import with_security_headers
from api.state import Services
from domain.active_tokens import ActiveTokenLists
from domain.auth import EndUserVerifier, VendorAuthenticator
from domain.clock import utcnow
from domain.db import StatementTimeouts, create_engine, create_session_factory
from domain.jobs import JobQueue, job_context
from domain.keys import KeyRing, MasterKey
from domain.last_used import UsageRecorder
from domain.leaks import GitHubScanningKeys
from domain.logs import lean_log_records
from domain.ratelimit import RateLimiter
from domain.revocations import FOLLOW_BLOCK_MS, RevocationFeed
from domain.secrets import Argon2Parameters, SecretHasher, SecretShape
from domain.settings import Settings, load_settings
from domain.validity import ValidityCache
from workers.inprocess import InProcessJobs
from workers.queue import CeleryJobQueue

logger = logging.getLogger("m2m.api")


# Redis must fail fast: validation falls back to PostgreSQL rather than wait on it.
REDIS_TIMEOUT_SECONDS = 0.25
KEY_REFRESH_SECONDS = 30
# What each API process logs once it serves: what waits for the service looks for it.
STARTED = "Application startup complete."


async def start_services(settings: Settings) -> Services:
    timeouts = StatementTimeouts(
        statement_ms=settings.database_statement_timeout_ms,
        lock_ms=settings.database_lock_timeout_ms,
    )
    engine = create_engine(
        settings.database_url,
        timeouts=timeouts,
        transaction_pooling=settings.database_transaction_pooling,
    )
    sessions = create_session_factory(engine)
    master_key = MasterKey(settings.master_key)
    keyring = await KeyRing.load(sessions, master_key, settings.issuer, utcnow())
    # `m2m dev` (embedded): no Redis at all; the cache and the limiter keep to this process.
    redis = (
        None
        if settings.embedded
        else Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    )
    end_users = EndUserVerifier.from_settings(settings)
    validity = ValidityCache(redis=redis, sessions=sessions, prefix=settings.redis_prefix)
    feed = revocation_feed(settings, redis)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        master_key=master_key,
        vendor=VendorAuthenticator(
            settings.vendor_client_id, settings.vendor_secret, master_key, settings.issuer
        ),
        end_users=end_users,
        hasher=SecretHasher(
            Argon2Parameters(
                time_cost=settings.argon2_time_cost,
                memory_kib=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
            max_pending=settings.argon2_max_pending,
            max_wait_seconds=settings.argon2_max_wait_ms / 1000 or None,
        ),
        keyring=keyring,
        redis=redis,
        validity=validity,
        active_lists=ActiveTokenLists(validity, sessions),
        limiter=RateLimiter(
            redis=redis,
            prefix=settings.redis_prefix,
            per_client=settings.exchange_limit_per_client,
            per_address=settings.exchange_limit_per_address,
        ),
        secret_shape=SecretShape(settings.secret_prefix),
        github_keys=GitHubScanningKeys(
            settings.github_secret_scanning_keys_url, settings.github_secret_scanning_keys_file
        ),
        jobs=_job_queue(settings, redis, sessions, validity, master_key, feed),
        feed=feed,
        started_at=utcnow(),
        usage=UsageRecorder(enabled=settings.record_last_used),
    )


def revocation_feed(settings: Settings, redis: Redis | None) -> RevocationFeed:
    """The feed on Redis (in memory without it), with a client of its own for the blocking
    reads of the stream's followers: the API's client gives up on Redis within 250 ms."""
    reader = (
        None
        if redis is None
        else Redis.from_url(
            settings.redis_url,
            socket_timeout=FOLLOW_BLOCK_MS / 1000 + 5,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    )
    return RevocationFeed(
        redis, settings.redis_prefix, settings.revocation_feed_retention_seconds, reader=reader
    )


def _job_queue(
    settings: Settings,
    redis: Redis | None,
    sessions: async_sessionmaker[AsyncSession],
    validity: ValidityCache,
    master_key: MasterKey,
    feed: RevocationFeed,
) -> JobQueue:
    """Celery beside Redis; without Redis (`m2m dev`) the jobs run in this process."""
    if redis is not None:
        return CeleryJobQueue(settings)
    return InProcessJobs(job_context(settings, sessions, validity, master_key, feed))


async def _write_usage_until(stopping: asyncio.Event, services: Services) -> None:
    """Write the token uses this process saw every M2M_LAST_USED_WRITE_SECONDS, and once more
    when `stopping` is set. Never cancelled halfway through a write: uses taken for a write that
    was cancelled would be lost."""
    while not stopping.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), services.settings.last_used_write_seconds)
        try:
            await services.usage.write(services.sessions)
        except Exception:
            logger.exception("writing last-used times failed; kept for the next write")


async def _refresh_keys_forever(keyring: KeyRing) -> None:
    """Pick up rotations made by other processes, and let retired keys leave the JWKS."""
    while True:
        await asyncio.sleep(KEY_REFRESH_SECONDS)
        try:
            await keyring.refresh(utcnow())
        except Exception:
            logger.exception("reloading signing keys failed; keeping the keys already loaded")


async def allow_every_method(message: Message, scope: Scope) -> None:
    """OPTIONS names every method of its path. Litestar's own answer names only the methods of
    the first handler registered on a path (its Allow is built before the others join), so it is
    set here from the app's routes.

    A coroutine function: Litestar runs a plain function given as a hook in a worker thread, and
    this one sees every message of every response."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    route_handler: Any = scope.get("route_handler")
    if route_handler is None or route_handler.http_methods != {"OPTIONS"}:
        return
    paths = route_handler.paths
    methods = {
        method
        for route in scope["app"].routes
        if isinstance(route, HTTPRoute) and route.path in paths
        for method in route.methods
    }
    headers = [(name, value) for name, value in message.get("headers", ()) if name != b"allow"]
    headers.append((b"allow", ", ".join(sorted(methods)).encode()))
    message["headers"] = headers


def create_app(
    settings: Settings, *, freeze_after_start: bool = False, announce_start: bool = False
) -> Litestar:
    """The app; `freeze_after_start` for a process that serves this app and nothing else (the
    objects built at start are then never collected: not for tests that build many apps);
    `announce_start` logs "Application startup complete." once the process serves (Granian
    says nothing then; uvicorn, under `m2m dev`, says it itself)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        await services.validity.start()
        await services.jobs.start()
        refresher = asyncio.create_task(_refresh_keys_forever(services.keyring))
        stopping = asyncio.Event()
        usage_writer = asyncio.create_task(_write_usage_until(stopping, services))
        if freeze_after_start:
            # What exists now (modules, the app, the services) lives as long as the process: out
            # of the collector's sight, a full collection no longer walks it (it took tens of ms,
            # in the middle of requests).
            gc.collect()
            gc.freeze()
        if announce_start:
            logger.info(STARTED)
        try:
            yield
        finally:
            refresher.cancel()
            stopping.set()
            await asyncio.gather(usage_writer, return_exceptions=True)
            await services.close()

    route_handlers: list[Any] = [
        *vendor.ROUTES,
        *configuration.ROUTES,
        *directory.ROUTES,
        *tokens.ROUTES,
        *policy.ROUTES,
        *exchange.ROUTES,
        *validation.ROUTES,
        *wellknown.ROUTES,
        *webhooks.ROUTES,
        *leaks.ROUTES,
        *events.ROUTES,
        *revocations.ROUTES,
        *ops.ROUTES,
        *audits.ROUTES,
        *(console.ROUTES if settings.console_enabled else []),
        *portal.ROUTES,
    ]
    cors = cors_config(settings)
    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "db_session": Provide(provide_db_session),
            "now": Provide(provide_now, sync_to_thread=False),
            "client_address": Provide(provide_client_address, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[count_requests],
        before_send=[allow_every_method],
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(),
        debug=False,
        # The process's logging is configured once, by `m2m` (domain/logs.py): Litestar's own
        # configuration would replace the root handler with one of a plain-text format.
        logging_config=None,
    )
    if cors is not None:
        # Without listed origins nothing adds CORS headers: no answer needs filtering.
        app.asgi_handler = cors_only_where_embedded(app.asgi_handler)
    # Route middleware never sees the answers the router gives itself (404, 405).
    app.asgi_handler = with_request_ids(app.asgi_handler)
    app.asgi_handler = with_security_headers(app.asgi_handler, settings.embed_origins)
    return app


def create_app_from_environment() -> Litestar:
    """Entry point for `m2m serve` workers: settings come from the environment."""
    lean_log_records()  # a worker process is configured by Granian, not configure_logging
    settings = load_settings(os.environ, mode="serve")
    return create_app(settings, freeze_after_start=True, announce_start=True)
