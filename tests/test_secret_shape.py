"""Client secrets and refresh tokens of a recognisable shape (README "Secret format"): a value of
the shape with a wrong checksum is refused before argon2, PostgreSQL or Redis are touched, and is
counted as a failure; secrets made before the shape keep working."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from litestar import Litestar
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain.models import ClientCredential
from domain.ratelimit import RateLimiter
from domain.secrets import (
    BASE62,
    SecretShape,
    new_secret,
    sha256_hex,
)
from domain.settings import ConfigError, load_settings
from tests.factories import Factory, add_credential, add_refresh_tokens
from tests.steps import (
    EXCHANGE,
    INVALID_REFRESH,
    OAUTH_REVOKE,
    OAUTH_TOKEN,
    CountingHasher,
    Credential,
    basic,
    client_at,
    exchange_ok,
    refresh,
    refresh_ok,
    replaced,
    simple_credential,
)
from tests.suite import REDIS_URL, VALID

INVALID_CLIENT = {"errors": ["Invalid client credentials"]}
# The pattern README "Secret format" documents, for the default prefix.
README_PATTERN = r"\bm2m_(?:cs|rt)_[0-9A-Za-z]{36}\b"
JUNK_ADDRESS = "198.51.100.77"


def wrong_checksum(value: str) -> str:
    """The same value with its last checksum character changed: the shape, a wrong checksum."""
    last = value[-1]
    return value[:-1] + BASE62[(BASE62.index(last) + 1) % 62]


def another_of_the_shape(value: str) -> str:
    """A value of the same shape and kind, with a right checksum, that was never issued."""
    shape = SecretShape()
    kind = shape.kind_of(value)
    assert kind is not None
    return shape.new(kind)


# --- counting what a request touches ------------------------------------------------------------


class CountingConnection(Connection):
    """A Redis connection that counts every command it sends (pipelines and scripts too)."""

    sent: list[bytes] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, list | tuple) else [command]
        CountingConnection.sent.extend(bytes(part) for part in packed)
        await super().send_packed_command(command, check_health)


@asynccontextmanager
async def counted_redis_limiter(
    services: Services, *, per_client: int = 1000, per_address: int = 1000
) -> AsyncIterator[list[bytes]]:
    """The app's limiter on a Redis client whose every command is counted; the list it yields."""
    pool = ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    limiter = RateLimiter(
        redis=redis,
        prefix=services.settings.redis_prefix,
        per_client=per_client,
        per_address=per_address,
    )
    CountingConnection.sent = []
    with replaced(services, "limiter", limiter):
        try:
            yield CountingConnection.sent
        finally:
            await limiter.reset()
            await redis.aclose()


@contextmanager
def counted_statements(services: Services) -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs in the block."""
    statements: list[str] = []

    def note(*args: Any) -> None:
        statements.append(args[2])

    target = services.engine.sync_engine
    event.listen(target, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(target, "before_cursor_execute", note)


@asynccontextmanager
async def touched(services: Services) -> AsyncIterator[dict[str, Any]]:
    """What the requests of the block touch: SQL statements, Redis commands, argon2 runs."""
    hasher = CountingHasher()
    async with counted_redis_limiter(services) as redis_commands:
        with counted_statements(services) as statements, replaced(services, "hasher", hasher):
            seen: dict[str, Any] = {"sql": statements}
            yield seen
            # Read before the limiter's reset, whose own commands are not the requests'.
            seen["redis"] = list(redis_commands)
            seen["argon2"] = hasher.argon2_verifications
    hasher.close()


# --- the shape -----------------------------------------------------------------------------------


async def test_new_client_secrets_and_refresh_tokens_have_the_documented_shape(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)

    assert re.fullmatch(README_PATTERN, credential.secret)
    assert credential.secret.startswith("m2m_cs_")
    assert SecretShape().kind_of(credential.secret) == "cs"
    assert re.fullmatch(README_PATTERN, pair["refresh_token"])
    assert pair["refresh_token"].startswith("m2m_rt_")
    assert SecretShape().kind_of(pair["refresh_token"]) == "rt"
    # A scanner finds it inside text, as GitHub does in a file.
    assert re.findall(README_PATTERN, f"key = '{credential.secret}'\n") == [credential.secret]
    # Found by value for a leak report: its SHA-256, beside the argon2id hash exchange checks.
    stored = await db.scalar(
        sa.select(ClientCredential).where(ClientCredential.client_id == credential.client_id)
    )
    assert stored is not None
    assert stored.secret_lookup == sha256_hex(credential.secret)
    assert stored.secret_hash.startswith("$argon2id$")


def test_the_shape_carries_at_least_160_random_bits_and_a_crc32_checksum() -> None:
    shape = SecretShape("acme")
    value = shape.new("cs")
    assert re.fullmatch(shape.pattern, value)
    assert shape.pattern == r"\bacme_(?:cs|rt)_[0-9A-Za-z]{36}\b"
    random_part = value[len("acme_cs_") : -6]
    assert len(random_part) * 5.954 >= 160  # log2(62) bits per base62 character
    assert shape.kind_of(value) == "cs"
    assert not shape.refuses(value, "cs")
    assert shape.refuses(value, "rt")  # a client secret is never a refresh token
    assert shape.refuses(wrong_checksum(value), "cs")
    assert shape.kind_of(wrong_checksum(value)) is None
    # Another environment's prefix, or the shape from before, is not refused offline.
    assert not shape.refuses(SecretShape("m2m").new("cs"), "cs")
    assert not shape.refuses(new_secret(), "cs")


def test_the_readme_documents_the_pattern_the_service_makes() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert SecretShape().pattern == README_PATTERN
    assert f"\n{README_PATTERN}\n" in readme
    assert SecretShape("acme").pattern.replace("(?:cs|rt)", "cs") in readme


def test_the_secret_prefix_is_a_setting_checked_at_start() -> None:
    assert load_settings(VALID).secret_prefix == "m2m"
    assert load_settings({**VALID, "M2M_SECRET_PREFIX": "acme"}).secret_prefix == "acme"
    for bad in ("M2M", "a", "acme_", "1abc", "abcdefghijk", "ac-me"):
        with pytest.raises(ConfigError) as refused:
            load_settings({**VALID, "M2M_SECRET_PREFIX": bad})
        assert refused.value.variable == "M2M_SECRET_PREFIX"
        assert "lowercase letters or digits" in str(refused.value)


async def test_the_configured_prefix_starts_every_new_secret(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    with replaced(services, "secret_shape", SecretShape("acme")):
        credential = await simple_credential(client, vendor, factory)
        pair = await exchange_ok(client, credential)
        assert credential.secret.startswith("acme_cs_")
        assert pair["refresh_token"].startswith("acme_rt_")
    # Made under another prefix: not of this environment's shape now, checked the ordinary way.
    await exchange_ok(client, credential)
    await refresh_ok(client, pair["refresh_token"])


# --- refused offline ----------------------------------------------------------------------


async def test_a_client_secret_with_a_wrong_checksum_is_refused_without_argon2_sql_or_redis(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    junk = {"clientId": credential.client_id, "secret": wrong_checksum(credential.secret)}

    async with touched(services) as offline:
        response = await client.post(EXCHANGE, json=junk)
    assert response.status_code == 401
    assert response.json() == INVALID_CLIENT
    assert offline == {"sql": [], "redis": [], "argon2": 0}

    # The counters see what a wrong secret of the right shape costs: all three.
    guess = {"clientId": credential.client_id, "secret": another_of_the_shape(credential.secret)}
    async with touched(services) as checked:
        response = await client.post(EXCHANGE, json=guess)
    assert response.status_code == 401
    assert checked["sql"]
    assert checked["redis"]
    assert checked["argon2"] == 1

    await exchange_ok(client, credential)  # the owner is not affected


async def test_a_refresh_token_with_a_wrong_checksum_is_refused_without_sql_or_redis(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)

    async with touched(services) as offline:
        response = await refresh(client, wrong_checksum(pair["refresh_token"]))
        as_refresh = await refresh(client, credential.secret)  # a client secret's shape
    assert response.status_code == as_refresh.status_code == 401
    assert response.json() == as_refresh.json() == INVALID_REFRESH
    assert offline == {"sql": [], "redis": [], "argon2": 0}

    async with touched(services) as checked:
        assert (
            await refresh(client, another_of_the_shape(pair["refresh_token"]))
        ).status_code == 401
    assert checked["sql"]  # a token of the right shape is looked up

    await refresh_ok(client, pair["refresh_token"])  # the presented one was never consumed


async def test_oauth_client_authentication_and_revocation_refuse_a_wrong_checksum_offline(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    junk = wrong_checksum(credential.secret)

    async with touched(services) as offline:
        token = await client.post(
            OAUTH_TOKEN,
            data={"grant_type": "client_credentials"},
            headers=basic(credential.client_id, junk),
        )
        posted = await client.post(
            OAUTH_TOKEN,
            data={
                "grant_type": "refresh_token",
                "refresh_token": pair["refresh_token"],
                "client_id": credential.client_id,
                "client_secret": junk,
            },
        )
        revoked = await client.post(
            OAUTH_REVOKE,
            data={"token": pair["refresh_token"]},
            headers=basic(credential.client_id, junk),
        )
    for response in (token, posted, revoked):
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
    assert offline == {"sql": [], "redis": [], "argon2": 0}

    # Revoking a refresh token of a wrong checksum looks nothing up and answers 200 (RFC 7009).
    right = basic(credential.client_id, credential.secret)
    response = await client.post(
        OAUTH_REVOKE, data={"token": wrong_checksum(pair["refresh_token"])}, headers=right
    )
    assert response.status_code == 200
    await refresh_ok(client, pair["refresh_token"])  # nothing was revoked


async def test_wrong_checksum_failures_count_against_the_abuse_limits_of_this_process(
    app: Litestar,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    junk = {"clientId": credential.client_id, "secret": wrong_checksum(credential.secret)}
    async with (
        counted_redis_limiter(services, per_client=1000, per_address=3) as redis_commands,
        client_at(app, JUNK_ADDRESS) as attacker,
    ):
        answers = [(await attacker.post(EXCHANGE, json=junk)).status_code for _ in range(3)]
        refused = await attacker.post(EXCHANGE, json=junk)
        assert redis_commands == []  # counted in this process only
        # The address has spent its budget: its right secret is refused too, still offline.
        right = await attacker.post(EXCHANGE, json=credential.body)
        junk_refresh = await attacker.post(
            "/identity/resources/auth/v2/api-token/token/refresh",
            json={"refreshToken": SecretShape().new("rt")[:-1] + "!"},
        )
        assert redis_commands == []
        await exchange_ok(client, credential)  # from elsewhere the owner goes on
    assert answers == [401, 401, 401]
    assert refused.status_code == right.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"errors": ["Too many requests"]}
    # Not of the shape (a character outside base62): looked up the ordinary way, 401.
    assert junk_refresh.status_code == 401


async def test_junk_naming_a_client_from_elsewhere_does_not_keep_its_owner_out(
    app: Litestar,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    junk = {"clientId": credential.client_id, "secret": wrong_checksum(credential.secret)}
    async with (
        counted_redis_limiter(services, per_client=3, per_address=1000),
        client_at(app, JUNK_ADDRESS) as attacker,
    ):
        answers = [(await attacker.post(EXCHANGE, json=junk)).status_code for _ in range(4)]
        # The owner, from an address never seen before: checked as usual, and let in.
        await exchange_ok(client, credential)
    assert answers == [401, 401, 401, 429]


# --- secrets made before the shape --------------------------------------------------------


async def test_a_client_secret_made_before_the_shape_still_exchanges(
    client: httpx.AsyncClient,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    services: Services,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    client_id = await add_credential(sessions, tenant.id)
    old_secret = new_secret()  # how secrets were made before: 256 bits, URL-safe, no prefix
    await db.execute(
        sa.update(ClientCredential)
        .where(ClientCredential.client_id == client_id)
        .values(secret_hash=await services.hasher.hash(old_secret))
    )
    await db.commit()
    old = Credential(client_id=client_id, secret=old_secret, tenant_id=tenant.id)

    pair = await exchange_ok(client, old)
    assert (await refresh_ok(client, pair["refresh_token"]))["refresh_token"].startswith("m2m_rt_")
    wrong = {"clientId": client_id, "secret": new_secret()}
    assert (await client.post(EXCHANGE, json=wrong)).json() == INVALID_CLIENT


async def test_a_refresh_token_made_before_the_shape_still_refreshes(
    client: httpx.AsyncClient, factory: Factory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await factory.tenant()
    client_id = await add_credential(sessions, tenant.id)
    # The factory stores each token under the SHA-256 of its id: the id is the token's value.
    (old_token,) = await add_refresh_tokens(sessions, client_id, 1, start=datetime.now(UTC))
    assert uuid.UUID(old_token)

    pair = await refresh_ok(client, old_token)
    assert pair["refresh_token"].startswith("m2m_rt_")
    assert (await refresh(client, old_token)).status_code == 401  # single use, as ever
