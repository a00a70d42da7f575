"""Real PostgreSQL (a database of its own per run, built by the Alembic migrations) and the app."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
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
from domain.db import create_engine, create_session_factory
from domain.schema import upgrade_to_head
from domain.settings import Settings, load_settings
from tests.factories import Factory

PG_SERVER = os.environ.get("M2M_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432")
VENDOR_CLIENT_ID = "test-vendor"
VENDOR_SECRET = "test-vendor-secret-0123456789"

# Tables a test may fill; the seeded environment row, fe.secure permissions and keys stay.
RESET = [
    "TRUNCATE tenants, users, roles, role_permissions, user_roles, access_tokens,"
    " access_token_roles, client_credentials, credential_roles, credential_permissions,"
    " refresh_tokens, job_runs, audit_events RESTART IDENTITY CASCADE",
    "DELETE FROM permissions WHERE NOT fe_permission",
    "UPDATE environment SET api_tokens_enabled = true, m2m_strategy = 'ClientCredentials',"
    " default_token_expiration = 86400, default_refresh_token_expiration = 2592000, extra = '{}'",
]


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


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


IDP_ISSUER = "https://idp.example.test"


REDIS_URL = os.environ.get("M2M_TEST_REDIS", "redis://127.0.0.1:6379/0")


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


@pytest.fixture(scope="session")
def settings(database_url: str, idp_key: rsa.RSAPrivateKey, redis_prefix: str) -> Settings:
    public_pem = (
        idp_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return load_settings(
        {
            "M2M_DATABASE_URL": database_url,
            "M2M_REDIS_URL": REDIS_URL,
            "M2M_REDIS_PREFIX": redis_prefix,
            "M2M_VENDOR_CLIENT_ID": VENDOR_CLIENT_ID,
            "M2M_VENDOR_SECRET": VENDOR_SECRET,
            "M2M_MASTER_KEY": "q" * 43,
            "M2M_ISSUER": "http://m2m.test",
            "M2M_USER_JWT_PUBLIC_KEY": public_pem,
            "M2M_USER_JWT_ISSUER": IDP_ISSUER,
        }
    )


@pytest.fixture
async def engine(settings: Settings, services: Services) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    async with engine.begin() as connection:
        for statement in RESET:
            await connection.exec_driver_sql(statement)
    await engine.dispose()
    # The truncation bypasses the validity cache (and every `m2m serve` of the run): drop it too.
    await services.validity.forget_all()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def db(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for a test to look at what is stored."""
    async with sessions() as session:
        yield session


@pytest.fixture
def factory(sessions: async_sessionmaker[AsyncSession]) -> Factory:
    return Factory(sessions)


@pytest.fixture(scope="session")
async def services(settings: Settings) -> AsyncIterator[Services]:
    """One API process's services for the whole run, as `m2m serve` would hold them."""
    started = await start_services(settings)
    await started.validity.start()
    yield started
    await started.close()


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


def serve_environment(settings: Settings) -> dict[str, str]:
    """The M2M_* environment under which a `m2m serve` process shares this run's stores."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("M2M_")}
    master = base64.urlsafe_b64encode(settings.master_key).decode().rstrip("=")
    return {
        **clean,
        "M2M_DATABASE_URL": settings.database_url,
        "M2M_REDIS_URL": settings.redis_url,
        "M2M_REDIS_PREFIX": settings.redis_prefix,
        "M2M_VENDOR_CLIENT_ID": settings.vendor_client_id,
        "M2M_VENDOR_SECRET": settings.vendor_secret,
        "M2M_MASTER_KEY": master,
        "M2M_ISSUER": settings.issuer,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(settings: Settings, **extra_env: str) -> Iterator[str]:
    """A real `m2m serve` subprocess on a free port; yields its base URL, stops it after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port)],
        env={**serve_environment(settings), **extra_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"m2m serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(f"{base}/.well-known/jwks.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("m2m serve did not answer within 30 s") from None
                time.sleep(0.05)  # waiting for a process to boot, not for a behaviour
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def live_server(settings: Settings, engine: AsyncEngine) -> Iterator[str]:
    with running_server(settings) as base:
        yield base
