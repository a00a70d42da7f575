"""Real PostgreSQL (a database of its own per run, built by the Alembic migrations) and the app.

The API modules whose behaviour must not depend on the store (`pytestmark = both_backends`) run
each test twice: on PostgreSQL and Redis as `m2m serve` runs, and on a SQLite file with the
in-process cache as `m2m dev` runs. `@serve_only` keeps one of their tests to PostgreSQL.

Tests that start a process (`m2m serve`, `m2m dev`, `m2m worker`, a redis-server or a PostgreSQL
cluster of their own) are marked `processes`: `pytest -m "not processes"` runs the rest and starts
none.

Fixtures live here; the plain helpers tests import live in factories.py (rows), steps.py (the
API), processes.py (processes and ports) and suite.py (what the whole run shares).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar
from redis import Redis as SyncRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import create_app, start_services
from api.state import Services
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.events import DeliveryPolicy
from domain.jobs import JobContext
from domain.models import Base
from domain.ratelimit import RateLimiter
from domain.schema import upgrade_to_head
from domain.secrets import SecretHasher
from domain.settings import DevDefaults, Settings, load_settings
from domain.validity import ValidityCache
from tests.factories import Factory
from tests.processes import PrivatePostgres, PrivateRedis, Stack, redis_client, running_server
from tests.steps import finish_jobs, replaced, until
from tests.suite import (
    ARGON2_PARAMETERS,
    IDP_ISSUER,
    ISSUER,
    MASTER_KEY,
    PG_SERVER,
    REDIS_URL,
    VENDOR_CLIENT_ID,
    VENDOR_SECRET,
    WEBHOOK_SECRET,
    _plain_dsn,
    with_cheap_argon2,
)
from workers.inprocess import InProcessJobs

POSTGRESQL = "postgresql"
SQLITE = "sqlite"
BACKENDS = (POSTGRESQL, SQLITE)

# Fixtures that start a process: every test using one, directly or through another fixture,
# is marked `processes`.
PROCESS_FIXTURES = frozenset({"live_server", "private_redis", "private_postgres"})

# Tables whose seeded rows stay between tests (the environment row, the fe.secure permissions,
# the signing keys); every other table is emptied after each test.
SEEDED = {"environment", "permissions", "signing_keys"}


def reset_statements(dialect: str) -> list[str]:
    """What empties the database between tests, children first."""
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    emptied = [name for name in tables if name not in SEEDED]
    if dialect == POSTGRESQL:
        empty = [f"TRUNCATE {', '.join(emptied)} RESTART IDENTITY CASCADE"]
    else:
        empty = [f"DELETE FROM {name}" for name in emptied]
    return [
        *empty,
        "DELETE FROM permissions WHERE NOT fe_permission",
        "UPDATE environment SET api_tokens_enabled = true, m2m_strategy = 'ClientCredentials',"
        " default_token_expiration = 86400, default_refresh_token_expiration = 2592000,"
        " extra = '{}'",
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run each test on PostgreSQL (serve) and on SQLite (dev)"
    )
    config.addinivalue_line(
        "markers", "serve_only: in a both_backends module, run this test on PostgreSQL only"
    )
    config.addinivalue_line(
        "markers",
        "processes: starts a process (m2m serve, dev or worker, a redis-server, a PostgreSQL"
        ' cluster); `pytest -m "not processes"` leaves these out',
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        "backend" in metafunc.fixturenames
        and definition.get_closest_marker("both_backends") is not None
        and definition.get_closest_marker("serve_only") is None
    ):
        # Session scope: pytest runs every PostgreSQL test, then every SQLite one, and builds
        # each backend's app once rather than once per test.
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The store the app runs on: PostgreSQL and Redis, unless parametrized by both_backends."""
    return str(getattr(request, "param", POSTGRESQL))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this run, migrated to head; dropped at the end."""
    name = f"m2m_test_{uuid.uuid4().hex[:12]}"
    url = f"{PG_SERVER}/{name}"
    upgrade_to_head(url)  # creates the database too
    yield url

    import asyncio

    async def drop() -> None:
        connection = await asyncpg.connect(_plain_dsn(f"{PG_SERVER}/postgres"))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def idp_key() -> rsa.RSAPrivateKey:
    """The vendor's identity provider, whose session JWTs end users present."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """Every Redis key of this run starts with this; they are deleted at the end."""
    prefix = f"m2m-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = SyncRedis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _common_environment(idp_key: rsa.RSAPrivateKey) -> dict[str, str]:
    public_pem = (
        idp_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "M2M_VENDOR_CLIENT_ID": VENDOR_CLIENT_ID,
        "M2M_VENDOR_SECRET": VENDOR_SECRET,
        "M2M_ISSUER": ISSUER,
        "M2M_USER_JWT_PUBLIC_KEY": public_pem,
        "M2M_USER_JWT_ISSUER": IDP_ISSUER,
        "M2M_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # The tests' event receivers listen on 127.0.0.1.
        "M2M_EVENT_ENDPOINTS_ALLOW_PRIVATE": "true",
    }


@pytest.fixture(scope="session")
def serve_settings(database_url: str, idp_key: rsa.RSAPrivateKey, redis_prefix: str) -> Settings:
    """`m2m serve`: this run's PostgreSQL database and Redis prefix."""
    return with_cheap_argon2(
        load_settings(
            {
                **_common_environment(idp_key),
                "M2M_DATABASE_URL": database_url,
                "M2M_REDIS_URL": REDIS_URL,
                "M2M_REDIS_PREFIX": redis_prefix,
                "M2M_MASTER_KEY": MASTER_KEY,
            }
        )
    )


@pytest.fixture(scope="session")
def dev_settings(tmp_path_factory: pytest.TempPathFactory, idp_key: rsa.RSAPrivateKey) -> Settings:
    """`m2m dev`: a SQLite file of this run, migrated; no Redis (and Redis settings ignored)."""
    path = tmp_path_factory.mktemp("m2m-dev") / "m2m.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_to_head(url)
    return with_cheap_argon2(
        load_settings(
            {**_common_environment(idp_key), "M2M_REDIS_URL": "redis://127.0.0.1:1/0"},
            mode="dev",
            dev=DevDefaults(
                database_url=url,
                vendor_client_id="unused",
                vendor_secret="unused-unused-unused",
                master_key=MASTER_KEY,
            ),
        )
    )


@pytest.fixture(scope="session")
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """The settings of the app under test: serve's, or dev's in a both_backends module."""
    name = "dev_settings" if backend == SQLITE else "serve_settings"
    chosen: Settings = request.getfixturevalue(name)
    return chosen


@pytest.fixture
async def engine(settings: Settings, services: Services) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    await finish_jobs(services)
    async with engine.begin() as connection:
        for statement in reset_statements(connection.dialect.name):
            await connection.exec_driver_sql(statement)
    await engine.dispose()
    # The truncation bypasses the validity cache (and every `m2m serve` of the run): drop it too.
    await services.validity.forget_all()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for a test to look at what is stored.

    Each statement sees what is committed when it runs, as under PostgreSQL's READ COMMITTED:
    on SQLite that takes AUTOCOMMIT, since a transaction would read one snapshot throughout
    (and hold the write lock that the app's requests wait for).
    """
    bind = engine
    if engine.dialect.name == SQLITE:
        bind = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with AsyncSession(bind=bind, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def factory(sessions: async_sessionmaker[AsyncSession]) -> Factory:
    return Factory(sessions)


@pytest.fixture(scope="session")
async def services(settings: Settings) -> AsyncIterator[Services]:
    """One API process's services for the whole run, as `m2m serve` would hold them."""
    started = await start_services(settings)
    # Jobs that requests enqueue wait until a test runs them (finish_jobs), on the domain code
    # the Celery tasks call (tests/test_workers.py runs them on real Celery workers) and with
    # an engine of their own, as a worker has. No job runs on a schedule here.
    await started.jobs.close()
    jobs_engine = create_engine(settings.database_url)
    started.jobs = InProcessJobs(
        JobContext(
            sessions=create_session_factory(jobs_engine),
            validity=started.validity,
            clock=utcnow,
            events=DeliveryPolicy.from_settings(settings, started.master_key),
            feed=started.feed,
        ),
        schedules=(),
        hold=True,
    )
    await started.validity.start()
    yield started
    await started.close()
    await jobs_engine.dispose()


@pytest.fixture(scope="session")
def app(settings: Settings, services: Services) -> Litestar:
    application = create_app(settings)
    application.state.services = services
    return application


@pytest.fixture
async def client(app: Litestar, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """Requests run in the test's own event loop, so gathered requests really interleave."""
    # Every request comes from 127.0.0.1: no test inherits another's exchange attempts.
    await app.state.services.limiter.reset()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as test_client:
        yield test_client


@pytest.fixture
async def vendor(client: httpx.AsyncClient) -> dict[str, str]:
    """Headers that authenticate as the vendor."""
    response = await client.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert response.status_code == 200, response.text
    return {"x-access-token": response.json()["token"]}


@pytest.fixture
def end_user(idp_key: rsa.RSAPrivateKey) -> Any:
    """Mint headers of an end user's IdP session: end_user(user_id, tenant_id)."""

    def headers(user_id: str, tenant_id: str, **claims: Any) -> dict[str, str]:
        now = datetime.now(UTC)
        payload = {
            "sub": user_id,
            "tenantId": tenant_id,
            "iss": IDP_ISSUER,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=10)).timestamp()),
            **claims,
        }
        token = jwt.encode(payload, idp_key, algorithm="RS256")
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def live_server(settings: Settings, engine: AsyncEngine) -> Iterator[str]:
    with running_server(settings) as base:
        yield base


@pytest.fixture
async def fresh_validity_cache(services: Services) -> AsyncIterator[None]:
    """Other tests change the database behind the cache's back (the truncation between tests):
    start every validation test from an empty cache."""
    await services.validity.forget_all()
    yield
    await services.validity.forget_all()


@pytest.fixture
async def generous_limits(services: Services) -> AsyncIterator[RateLimiter]:
    """Rate limits and an argon2 queue far above what a bulk test sends."""
    limiter = RateLimiter(
        redis=services.redis,
        prefix=services.settings.redis_prefix,
        per_client=100_000,
        per_address=100_000,
    )
    hasher = SecretHasher(ARGON2_PARAMETERS, max_pending=100_000)
    with replaced(services, "limiter", limiter), replaced(services, "hasher", hasher):
        yield limiter
    await limiter.reset()
    hasher.close()


# --- a redis-server of the test's own, which it may flush, pause or kill (never the shared one) ---


@pytest.fixture(name="private_redis")
def private_redis_fixture() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(name="stack")
async def stack_fixture(
    private_redis: PrivateRedis, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[Stack]:
    own = dataclasses.replace(settings, redis_url=private_redis.url)
    services = await start_services(own)
    await services.validity.start()
    app = create_app(own)
    app.state.services = services
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
            await until(lambda: services.validity.listening, "the stack listens")
            yield Stack(services=services, client=client, redis=private_redis, settings=own)
    finally:
        await services.close()


# --- a PostgreSQL cluster of the test's own, which it may stop and start (never the shared one) ---


@pytest.fixture(name="private_postgres")
def private_postgres_fixture() -> Iterator[PrivatePostgres]:
    """Its database `m2m` is migrated to head, and the cluster is removed after the test."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        upgrade_to_head(server.url)
        yield server
    finally:
        server.remove()


@pytest.fixture
async def bystander(stack: Stack, services: Services) -> AsyncIterator[ValidityCache]:
    """Another API process's cache on the same private Redis, with nothing in memory."""
    client = redis_client(stack.redis.url)
    cache = ValidityCache(
        redis=client, sessions=services.sessions, prefix=stack.settings.redis_prefix
    )
    yield cache
    await cache.close()
    await client.aclose()


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards if a test made it."""
    name = f"m2m_scratch_{uuid.uuid4().hex[:10]}"
    yield f"{PG_SERVER}/{name}"

    async def drop() -> None:
        connection = await asyncpg.connect(_plain_dsn(f"{PG_SERVER}/postgres"))
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())
