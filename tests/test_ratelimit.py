"""Brute force and overload: the client address limits count by, per-client and per-address
limits, and the bounded argon2 queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from freezegun import freeze_time
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.state import Services
from domain.errors import RateLimited
from domain.ratelimit import RateLimiter, client_address
from domain.secrets import Argon2Parameters, Overloaded, SecretHasher
from domain.settings import ConfigError, Settings, load_settings
from tests.factories import Factory
from tests.processes import running_server
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


# --- the client address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "counted"),
    [
        # No proxy trusted: the socket's peer, whatever the header says.
        ("203.0.113.7", ["192.0.2.1"], (), "203.0.113.7"),
        ("127.0.0.1", ["192.0.2.1"], (), "127.0.0.1"),
        # A trusted proxy: the hop it appended.
        ("10.0.0.2", ["203.0.113.7"], ("10.0.0.0/8",), "203.0.113.7"),
        # ... not a hop the client wrote before it, whatever it is.
        ("10.0.0.2", ["192.0.2.1, 203.0.113.7"], ("10.0.0.0/8",), "203.0.113.7"),
        ("10.0.0.2", ["10.9.9.9, 203.0.113.7"], ("10.0.0.0/8",), "203.0.113.7"),
        # Past trusted proxies in a chain, to the right-most hop that is not one.
        ("10.0.0.2", ["192.0.2.1, 203.0.113.7, 10.0.0.3"], ("10.0.0.0/8",), "203.0.113.7"),
        # Several headers are one list, in order.
        ("10.0.0.2", ["192.0.2.1", "203.0.113.7"], ("10.0.0.0/8",), "203.0.113.7"),
        # Every hop trusted: the left-most.
        ("10.0.0.2", ["10.0.0.5, 10.0.0.3"], ("10.0.0.0/8",), "10.0.0.5"),
        # No header, or an empty one: the proxy itself.
        ("10.0.0.2", [], ("10.0.0.0/8",), "10.0.0.2"),
        ("10.0.0.2", [" , "], ("10.0.0.0/8",), "10.0.0.2"),
        # A hop that is not an address names nobody: the trusted hop beside it counts.
        ("10.0.0.2", ["203.0.113.7, bogus"], ("10.0.0.0/8",), "10.0.0.2"),
        ("10.0.0.2", ["203.0.113.7, bogus, 10.0.0.3"], ("10.0.0.0/8",), "10.0.0.3"),
        # Ports, brackets, IPv4-mapped IPv6.
        ("10.0.0.2", ["203.0.113.7:5555"], ("10.0.0.0/8",), "203.0.113.7"),
        ("::ffff:10.0.0.2", ["[2001:db8::1]:443"], ("10.0.0.0/8",), "2001:db8::/64"),
        # IPv6 counts by its /64: one host holds a whole one.
        ("2001:db8:1:2::5", [], (), "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", [], (), "2001:db8:1:2::/64"),
        ("fd00::1", ["2001:db8:5::1"], ("fd00::/8",), "2001:db8:5::/64"),
        (None, ["203.0.113.7"], ("10.0.0.0/8",), "unknown"),
    ],
)
def test_the_address_limits_count_by(
    peer: str | None, forwarded_for: list[str], trusted: tuple[str, ...], counted: str
) -> None:
    assert client_address(peer, forwarded_for, trusted) == counted


@pytest.mark.processes
async def test_a_changing_x_forwarded_for_does_not_escape_the_per_address_limit_of_serve(
    settings: Settings, services: Services, engine: AsyncEngine
) -> None:
    """`m2m serve` trusts no proxy unless told: a client on the same host (as a co-located proxy
    would be) cannot pick its own address per request."""
    await services.limiter.reset()
    with running_server(settings, M2M_EXCHANGE_LIMIT_PER_ADDRESS="3") as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as served:
            for _ in range(3):  # a minute may turn in the middle: the whole round again, then
                window = int(time.time()) // 60
                answers = [
                    await served.post(
                        EXCHANGE,
                        json={"clientId": f"guess-{number}", "secret": "guess"},
                        headers={"X-Forwarded-For": f"192.0.2.{number}"},
                    )
                    for number in range(4)
                ]
                if int(time.time()) // 60 == window:
                    break
                await services.limiter.reset()
    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1


async def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_limited(
    client: httpx.AsyncClient, services: Services
) -> None:
    proxied = dataclasses.replace(services.settings, trusted_proxies=("127.0.0.1/32",))
    guess = {"clientId": "guess", "secret": "guess"}

    def via_proxy(forwarded_for: str) -> dict[str, str]:
        return {"X-Forwarded-For": forwarded_for}

    with freeze_time(START, real_asyncio=True), replaced(services, "settings", proxied):
        async with limits(services, per_address=2):
            for forged in ("192.0.2.1", "192.0.2.2"):
                response = await client.post(
                    EXCHANGE, json=guess, headers=via_proxy(f"{forged}, 203.0.113.7")
                )
                assert response.status_code == 401
            # A new forged left-most hop is still 203.0.113.7's request.
            refused = await client.post(
                EXCHANGE, json=guess, headers=via_proxy("192.0.2.3, 203.0.113.7")
            )
            # Another client behind the same proxy has a budget of its own.
            neighbour = await client.post(EXCHANGE, json=guess, headers=via_proxy("203.0.113.8"))
    assert (refused.status_code, refused.json()) == (429, TOO_MANY)
    assert refused.headers["retry-after"] == "45"
    assert neighbour.status_code == 401


async def test_with_no_proxy_trusted_the_forwarded_header_is_ignored(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert services.settings.trusted_proxies == ()
    with freeze_time(START, real_asyncio=True):
        async with limits(services, per_address=2):
            answers = [
                await client.post(
                    EXCHANGE,
                    json={"clientId": "guess", "secret": "guess"},
                    headers={"X-Forwarded-For": f"192.0.2.{number}"},
                )
                for number in range(3)
            ]
    assert [answer.status_code for answer in answers] == [401, 401, 429]


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
