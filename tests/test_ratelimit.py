"""Brute force and overload: per-client and per-address limits, and the bounded argon2 queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from freezegun import freeze_time
from redis.asyncio import Redis

from api.state import Services
from domain.errors import RateLimited
from domain.ratelimit import RateLimiter
from domain.secrets import Argon2Parameters, Overloaded, SecretHasher
from domain.settings import ConfigError, load_settings
from tests.factories import Factory
from tests.steps import (
    EXCHANGE,
    OAUTH_TOKEN,
    CountingHasher,
    assert_oauth_error,
    exchange_ok,
    replaced,
    simple_credential,
)
from tests.suite import VALID as VALID_SETTINGS

# 15 seconds into a minute: the window frees 45 seconds later.
START = datetime(2033, 1, 10, 9, 30, 15, tzinfo=UTC)
TOO_MANY = {"errors": ["Too many requests"]}


@asynccontextmanager
async def limits(
    services: Services, *, per_client: int = 1000, per_address: int = 1000
) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(
        redis=services.redis,
        prefix=services.settings.redis_prefix,
        per_client=per_client,
        per_address=per_address,
    )
    with replaced(services, "limiter", limiter):
        yield limiter
    await limiter.reset()


# --- limits ----------------------------------------------------------------------------------


async def test_attempts_beyond_the_per_client_limit_are_429_with_retry_after(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    neighbour = await simple_credential(client, vendor, factory)
    hasher = CountingHasher()
    with freeze_time(START, real_asyncio=True), replaced(services, "hasher", hasher):
        async with limits(services, per_client=3):
            # Failed and successful attempts both count.
            for secret in ("wrong", "wrong"):
                response = await client.post(EXCHANGE, json={**credential.body, "secret": secret})
                assert response.status_code == 401
            await exchange_ok(client, credential)
            checked = len(hasher.verified_stored_hash)

            refused = await client.post(EXCHANGE, json=credential.body)
            assert (refused.status_code, refused.json()) == (429, TOO_MANY)
            assert refused.headers["retry-after"] == "45"
            assert len(hasher.verified_stored_hash) == checked  # refused before argon2
            # Another client from the same address is not held back by this one's count.
            await exchange_ok(client, neighbour)
    hasher.close()


async def test_attempts_beyond_the_per_address_limit_are_429(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True):
        async with limits(services, per_address=3):
            for number in range(3):
                response = await client.post(
                    EXCHANGE, json={"clientId": f"guess-{number}", "secret": "guess"}
                )
                assert response.status_code == 401
            refused = await client.post(EXCHANGE, json=credential.body)
    assert (refused.status_code, refused.json()) == (429, TOO_MANY)
    assert refused.headers["retry-after"] == "45"


async def test_the_next_window_admits_the_client_again(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True) as frozen:
        async with limits(services, per_client=1):
            await exchange_ok(client, credential)
            assert (await client.post(EXCHANGE, json=credential.body)).status_code == 429
            frozen.move_to(START + timedelta(seconds=44))
            assert (await client.post(EXCHANGE, json=credential.body)).status_code == 429
            frozen.move_to(START + timedelta(seconds=45))
            await exchange_ok(client, credential)


async def test_oauth_token_rate_limit_is_temporarily_unavailable_with_retry_after(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {
        "grant_type": "client_credentials",
        "client_id": credential.client_id,
        "client_secret": credential.secret,
    }
    with freeze_time(START, real_asyncio=True):
        async with limits(services, per_client=1):
            assert (await client.post(OAUTH_TOKEN, data=form)).status_code == 200
            refused = await client.post(OAUTH_TOKEN, data=form)
    assert_oauth_error(refused, 429, "temporarily_unavailable", "Too many requests")
    assert refused.headers["retry-after"] == "45"


async def test_attempts_are_counted_in_redis_under_the_prefix(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True):
        await exchange_ok(client, credential)
    window = int(START.timestamp()) // 60
    prefix = f"{services.settings.redis_prefix}ratelimit:"
    client_key = f"{prefix}client:{window}:{credential.client_id}"
    address_key = f"{prefix}address:{window}:127.0.0.1"
    assert await services.redis.get(client_key) == b"1"
    assert await services.redis.get(address_key) == b"1"
    assert 0 < await services.redis.ttl(client_key) <= 61


async def test_with_redis_unreachable_exchanges_go_on_counted_in_this_process(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    unreachable = Redis.from_url(
        "redis://127.0.0.1:1", socket_timeout=0.25, socket_connect_timeout=0.25
    )
    limiter = RateLimiter(redis=unreachable, prefix=services.settings.redis_prefix, per_client=2)
    with (
        caplog.at_level(logging.WARNING, logger="m2m.ratelimit"),
        replaced(services, "limiter", limiter),
    ):
        await exchange_ok(client, credential)
        await exchange_ok(client, credential)
        refused = await client.post(EXCHANGE, json=credential.body)
    await unreachable.aclose()
    assert refused.status_code == 429
    assert any("cannot reach Redis" in record.getMessage() for record in caplog.records)


async def test_memory_backend_counts_in_process() -> None:
    limiter = RateLimiter(redis=None, prefix="unused:", per_client=2, per_address=100)
    for _ in range(2):
        await limiter.count_attempt(client_id="c", address="10.0.0.1", now=START)
    with pytest.raises(RateLimited) as refused:
        await limiter.count_attempt(client_id="c", address="10.0.0.1", now=START)
    assert refused.value.retry_after == 45
    await limiter.count_attempt(client_id="other", address="10.0.0.1", now=START)
    await limiter.count_attempt(client_id="c", address="10.0.0.1", now=START + timedelta(minutes=1))


async def test_limits_default_to_60_and_600_per_minute_and_are_settings() -> None:
    defaults = load_settings(VALID_SETTINGS)
    assert (defaults.exchange_limit_per_client, defaults.exchange_limit_per_address) == (60, 600)
    raised = load_settings(
        {
            **VALID_SETTINGS,
            "M2M_EXCHANGE_LIMIT_PER_CLIENT": "5000",
            "M2M_EXCHANGE_LIMIT_PER_ADDRESS": "90000",
        }
    )
    assert (raised.exchange_limit_per_client, raised.exchange_limit_per_address) == (5000, 90000)
    with pytest.raises(ConfigError, match="M2M_EXCHANGE_LIMIT_PER_CLIENT"):
        load_settings({**VALID_SETTINGS, "M2M_EXCHANGE_LIMIT_PER_CLIENT": "lots"})


# --- overload --------------------------------------------------------------------------------


async def test_argon2_work_beyond_the_bound_is_refused_at_once() -> None:
    hasher = SecretHasher(Argon2Parameters(), workers=1, max_pending=2)
    attempts = [asyncio.ensure_future(hasher.verify(None, "secret")) for _ in range(3)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    hasher.close()
    assert results[:2] == [False, False]
    assert isinstance(results[2], Overloaded)
    assert results[2].retry_after == 1
    assert hasher.pending == 0


async def test_argon2_bound_defaults_to_four_per_worker_and_is_a_setting() -> None:
    hasher = SecretHasher(Argon2Parameters(), workers=1)
    attempts = [asyncio.ensure_future(hasher.verify(None, "secret")) for _ in range(5)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    hasher.close()
    assert [isinstance(result, Overloaded) for result in results] == [False] * 4 + [True]

    assert load_settings(VALID_SETTINGS).argon2_max_pending is None
    assert (
        load_settings({**VALID_SETTINGS, "M2M_ARGON2_MAX_PENDING": "64"}).argon2_max_pending == 64
    )
    with pytest.raises(ConfigError, match="M2M_ARGON2_MAX_PENDING"):
        load_settings({**VALID_SETTINGS, "M2M_ARGON2_MAX_PENDING": "0"})


@asynccontextmanager
async def busy_hasher(services: Services) -> AsyncIterator[asyncio.Future[str]]:
    """A one-slot hasher whose slot is taken by a slow job for the duration of the block."""
    # Forty passes make the occupying hash last a large fraction of a second.
    hasher = SecretHasher(Argon2Parameters(time_cost=40), workers=1, max_pending=1)
    with replaced(services, "hasher", hasher):
        # It takes the slot at the request's first pause (Redis, long before argon2); were
        # it late, it would be the one refused and `await occupying` below would raise.
        occupying = asyncio.ensure_future(hasher.hash("occupies the only slot"))
        yield occupying
    await occupying
    hasher.close()


async def test_overload_is_503_with_retry_after_instead_of_a_queue(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    async with busy_hasher(services) as occupying:
        response = await client.post(EXCHANGE, json=credential.body)
        answered_while_busy = not occupying.done()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": ["Too many authentications in progress; retry shortly"]}
    assert answered_while_busy
    await exchange_ok(client, credential)


async def test_oauth_overload_is_temporarily_unavailable(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {
        "grant_type": "client_credentials",
        "client_id": credential.client_id,
        "client_secret": credential.secret,
    }
    async with busy_hasher(services):
        response = await client.post(OAUTH_TOKEN, data=form)
    assert_oauth_error(response, 503, "temporarily_unavailable")
    assert response.headers["retry-after"] == "1"
