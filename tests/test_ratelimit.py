"""Brute force and overload: the client address limits count by, failures per client, per address
and for the vendor credentials, and the bounded argon2 queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from freezegun import freeze_time
from litestar import Litestar
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.state import Services
from domain.errors import RateLimited, Unauthenticated, Unavailable
from domain.ratelimit import RateLimiter, client_address
from domain.secrets import Argon2Parameters, Overloaded, SecretHasher
from domain.settings import ConfigError, Settings, load_settings
from tests.factories import Factory
from tests.processes import running_server
from tests.steps import (
    EXCHANGE,
    OAUTH_TOKEN,
    CountingHasher,
    Credential,
    assert_oauth_error,
    client_at,
    exchange_ok,
    posted,
    replaced,
    simple_credential,
)
from tests.suite import VALID as VALID_SETTINGS
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

# 15 seconds into a minute: the window frees 45 seconds later.
START = datetime(2033, 1, 10, 9, 30, 15, tzinfo=UTC)
TOO_MANY = {"errors": ["Too many requests"]}
INVALID_CLIENT = {"errors": ["Invalid client credentials"]}
VENDOR_AUTH = "/auth/vendor"
VENDOR_BODY = {"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
ATTACKER = "198.51.100.66"


@asynccontextmanager
async def limits(
    services: Services,
    *,
    per_client: int = 1000,
    per_address: int = 1000,
    vendor_overall: int = 1000,
    vendor_per_address: int = 1000,
) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(
        redis=services.redis,
        prefix=services.settings.redis_prefix,
        per_client=per_client,
        per_address=per_address,
        vendor_overall=vendor_overall,
        vendor_per_address=vendor_per_address,
    )
    with replaced(services, "limiter", limiter):
        yield limiter
    await limiter.reset()


def wrong(credential: Credential) -> dict[str, str]:
    return {**credential.body, "secret": "wrong-secret"}


def same_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers two answers to different requests may share: all but the request id."""
    return sorted(item for item in response.headers.items() if item[0] != "x-request-id")


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(Counter(response.status_code for response in responses))


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


# --- failures per client and per address -----------------------------------------------------


async def test_failures_naming_a_client_from_elsewhere_do_not_keep_its_owner_out(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    app: Litestar,
) -> None:
    """The clientId is no secret (it is every exchanged JWT's `sub`): 70 wrong secrets a minute
    from 35 other addresses spend its budget of 60 failures, and the owner's machine, which
    exchanged before, goes on exchanging."""
    credential = await simple_credential(client, vendor, factory)
    hasher = CountingHasher(max_pending=1000)
    with freeze_time(START, real_asyncio=True), replaced(services, "hasher", hasher):
        async with limits(services, per_client=60, per_address=600):
            await exchange_ok(client, credential)  # the owner, from 127.0.0.1

            async def attack(number: int) -> list[httpx.Response]:
                async with client_at(app, f"198.51.100.{number}") as attacker:
                    return [await attacker.post(EXCHANGE, json=wrong(credential)) for _ in "ab"]

            answers = [r for rs in await asyncio.gather(*map(attack, range(35))) for r in rs]
            assert statuses(answers) == {401: 60, 429: 10}

            await exchange_ok(client, credential)
            owner = await client.post(
                OAUTH_TOKEN, data={"grant_type": "client_credentials", **posted(credential)}
            )
            assert owner.status_code == 200
            # A machine the owner never used before is refused while the attack lasts.
            async with client_at(app, "192.0.2.200") as new_machine:
                refused = await new_machine.post(EXCHANGE, json=credential.body)
                assert (refused.status_code, refused.json()) == (429, TOO_MANY)
                assert refused.headers["retry-after"] == "45"
    hasher.close()


async def test_guesses_at_a_spent_client_are_refused_without_argon2_and_bounded_per_window(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    app: Litestar,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    hasher = CountingHasher(max_pending=1000)

    async def guesses(addresses: range) -> list[httpx.Response]:
        async def guess_from(number: int) -> list[httpx.Response]:
            async with client_at(app, f"198.51.100.{number}") as attacker:
                sent = [attacker.post(EXCHANGE, json=wrong(credential)) for _ in range(5)]
                return list(await asyncio.gather(*sent))

        return [r for rs in await asyncio.gather(*map(guess_from, addresses)) for r in rs]

    with freeze_time(START, real_asyncio=True) as frozen, replaced(services, "hasher", hasher):
        async with limits(services, per_client=10, per_address=1000):
            # 50 guesses at once from 10 addresses: the budget holds under concurrency.
            first = await guesses(range(10))
            assert statuses(first) == {401: 10, 429: 40}
            assert hasher.argon2_verifications == 10
            assert all(r.headers["retry-after"] == "45" for r in first if r.status_code == 429)
            # From an address never seen: refused before any argon2 work.
            async with client_at(app, "192.0.2.1") as fresh:
                refused = await fresh.post(EXCHANGE, json=wrong(credential))
            assert refused.status_code == 429
            assert hasher.argon2_verifications == 10

            frozen.move_to(START + timedelta(seconds=45))  # the next window
            second = await guesses(range(10, 20))
            assert statuses(second) == {401: 10, 429: 40}
            assert hasher.argon2_verifications == 20
    hasher.close()


async def test_a_right_secret_spends_no_failure_budget(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    neighbour = await simple_credential(client, vendor, factory)
    hasher = CountingHasher()
    with freeze_time(START, real_asyncio=True), replaced(services, "hasher", hasher):
        async with limits(services, per_client=3, per_address=3):
            for _ in range(10):
                await exchange_ok(client, credential)
            for _ in range(3):
                response = await client.post(EXCHANGE, json=wrong(neighbour))
                assert response.status_code == 401
            checked = len(hasher.verified_stored_hash)

            refused = await client.post(EXCHANGE, json=neighbour.body)
            assert (refused.status_code, refused.json()) == (429, TOO_MANY)
            assert refused.headers["retry-after"] == "45"
            assert len(hasher.verified_stored_hash) == checked  # refused before argon2
    hasher.close()


async def test_one_address_over_its_failure_budget_is_refused_whatever_it_names(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    app: Litestar,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True):
        async with limits(services, per_address=3):
            await exchange_ok(client, credential)  # 127.0.0.1 is known to this credential
            for number in range(3):
                response = await client.post(
                    EXCHANGE, json={"clientId": f"guess-{number}", "secret": "guess"}
                )
                assert response.status_code == 401
            refused = await client.post(EXCHANGE, json=credential.body)
            async with client_at(app, "192.0.2.7") as elsewhere:
                await exchange_ok(elsewhere, credential)
    assert (refused.status_code, refused.json()) == (429, TOO_MANY)
    assert refused.headers["retry-after"] == "45"


async def test_the_next_window_admits_the_client_again(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True) as frozen:
        async with limits(services, per_client=1):
            assert (await client.post(EXCHANGE, json=wrong(credential))).status_code == 401
            assert (await client.post(EXCHANGE, json=credential.body)).status_code == 429
            frozen.move_to(START + timedelta(seconds=44))
            assert (await client.post(EXCHANGE, json=credential.body)).status_code == 429
            frozen.move_to(START + timedelta(seconds=45))
            await exchange_ok(client, credential)


async def test_an_address_stays_known_for_a_day_after_its_last_success(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    app: Litestar,
) -> None:
    credential = await simple_credential(client, vendor, factory)

    async def spend_budget() -> None:
        async with client_at(app, ATTACKER) as attacker:
            assert (await attacker.post(EXCHANGE, json=wrong(credential))).status_code == 401
            assert (await attacker.post(EXCHANGE, json=wrong(credential))).status_code == 429

    with freeze_time(START, real_asyncio=True) as frozen:
        async with limits(services, per_client=1):
            await exchange_ok(client, credential)
            frozen.move_to(START + timedelta(hours=23))
            await spend_budget()
            await exchange_ok(client, credential)  # known: the day since START is not over
            frozen.move_to(START + timedelta(hours=46, minutes=59))
            await spend_budget()
            await exchange_ok(client, credential)  # a day since the last success at 23 h
            frozen.move_to(START + timedelta(hours=71))
            await spend_budget()
            refused = await client.post(EXCHANGE, json=credential.body)
    assert refused.status_code == 429


async def test_oauth_token_rate_limit_is_temporarily_unavailable_with_retry_after(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {"grant_type": "client_credentials", **posted(credential)}
    with freeze_time(START, real_asyncio=True):
        async with limits(services, per_client=1):
            failed = await client.post(OAUTH_TOKEN, data={**form, "client_secret": "wrong"})
            assert failed.status_code == 401
            refused = await client.post(OAUTH_TOKEN, data=form)
    assert_oauth_error(refused, 429, "temporarily_unavailable", "Too many requests")
    assert refused.headers["retry-after"] == "45"


async def test_an_unknown_client_id_costs_one_argon2_verification_like_a_wrong_secret(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    """The answer and the work are the same, so neither tells whether a clientId exists."""
    credential = await simple_credential(client, vendor, factory)
    hasher = CountingHasher()
    with replaced(services, "hasher", hasher):
        wrong_secret = await client.post(EXCHANGE, json=wrong(credential))
        after_wrong_secret = hasher.argon2_verifications
        unknown = await client.post(
            EXCHANGE, json={"clientId": "no-such-client", "secret": "wrong-secret"}
        )
        after_unknown = hasher.argon2_verifications - after_wrong_secret
    hasher.close()
    assert (wrong_secret.status_code, wrong_secret.json()) == (401, INVALID_CLIENT)
    assert (unknown.status_code, unknown.json()) == (401, INVALID_CLIENT)
    assert (after_wrong_secret, after_unknown) == (1, 1)
    assert hasher.verified_stored_hash == [True, False]


async def test_failures_are_counted_in_redis_under_the_prefix(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True):
        assert (await client.post(EXCHANGE, json=wrong(credential))).status_code == 401
        await exchange_ok(client, credential)
    window = int(START.timestamp()) // 60
    prefix = f"{services.settings.redis_prefix}ratelimit:client:"
    client_key = f"{prefix}subject:{window}:{credential.client_id}"
    address_key = f"{prefix}address:{window}:127.0.0.1"
    known_key = f"{prefix}known:{credential.client_id}:127.0.0.1"
    assert await services.redis.get(client_key) == b"1"  # the failure; the success gave back
    assert await services.redis.get(address_key) == b"1"
    assert 0 < await services.redis.ttl(client_key) <= 61
    known_until = int((START + timedelta(days=1)).timestamp())
    assert await services.redis.get(known_key) == str(known_until).encode()
    assert 86_000 < await services.redis.ttl(known_key) <= 86_400


async def test_with_redis_unreachable_exchanges_go_on_counted_in_this_process(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    app: Litestar,
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
        async with client_at(app, ATTACKER) as attacker:
            for _ in range(2):
                assert (await attacker.post(EXCHANGE, json=wrong(credential))).status_code == 401
            refused = await attacker.post(EXCHANGE, json=wrong(credential))
        await exchange_ok(client, credential)  # known to this process
    await unreachable.aclose()
    assert refused.status_code == 429
    assert any("cannot reach Redis" in record.getMessage() for record in caplog.records)


async def test_memory_backend_counts_failures_in_process() -> None:
    limiter = RateLimiter(redis=None, prefix="unused:", per_client=2, per_address=100)
    clients = limiter.clients

    async def check(subject: str, address: str, *, right: bool, now: datetime = START) -> None:
        async with limiter.checking(clients, subject, address=address, now=now):
            if not right:
                raise Unauthenticated("wrong")

    await check("c", "10.0.0.1", right=True)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await check("c", "10.0.0.2", right=False)
    with pytest.raises(RateLimited) as refused:
        await check("c", "10.0.0.3", right=True)
    assert refused.value.retry_after == 45
    await check("c", "10.0.0.1", right=True)  # known
    await check("other", "10.0.0.3", right=True)
    await check("c", "10.0.0.3", right=True, now=START + timedelta(minutes=1))


async def test_a_check_that_ends_in_another_error_is_not_a_failure() -> None:
    """Overload or an unreachable database says nothing about the secret: nothing is spent."""
    limiter = RateLimiter(redis=None, prefix="unused:", per_client=1, per_address=1)
    for _ in range(3):
        with pytest.raises(Unavailable):
            async with limiter.checking(limiter.clients, "c", address="10.0.0.1", now=START):
                raise Unavailable("database away")
    async with limiter.checking(limiter.clients, "c", address="10.0.0.1", now=START):
        pass


async def test_limits_default_to_60_and_600_failures_per_minute_and_are_settings() -> None:
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


# --- the vendor credentials ------------------------------------------------------------------


async def test_vendor_failures_from_one_address_are_refused_with_retry_after(
    client: httpx.AsyncClient, services: Services, app: Litestar
) -> None:
    with freeze_time(START, real_asyncio=True):
        async with limits(services, vendor_per_address=3), client_at(app, ATTACKER) as attacker:
            for body in (
                {**VENDOR_BODY, "secret": "wrong"},
                {**VENDOR_BODY, "clientId": "not-the-vendor"},
                {"clientId": "not-the-vendor", "secret": "wrong"},
            ):
                assert (await attacker.post(VENDOR_AUTH, json=body)).status_code == 401
            refused = await attacker.post(VENDOR_AUTH, json=VENDOR_BODY)
            elsewhere = await client.post(VENDOR_AUTH, json=VENDOR_BODY)
    assert (refused.status_code, refused.json()) == (429, TOO_MANY)
    assert refused.headers["retry-after"] == "45"
    assert elsewhere.status_code == 200


async def test_vendor_failures_overall_keep_new_addresses_out_but_not_the_vendors_own(
    client: httpx.AsyncClient, vendor: dict[str, str], services: Services, app: Litestar
) -> None:
    with freeze_time(START, real_asyncio=True) as frozen:
        async with limits(services, vendor_overall=5, vendor_per_address=100):
            assert (await client.post(VENDOR_AUTH, json=VENDOR_BODY)).status_code == 200
            for number in range(6):
                async with client_at(app, f"198.51.100.{number}") as attacker:
                    answer = await attacker.post(VENDOR_AUTH, json={**VENDOR_BODY, "secret": "x"})
                assert answer.status_code == (401 if number < 5 else 429)
            async with client_at(app, "192.0.2.10") as new_machine:
                refused = await new_machine.post(VENDOR_AUTH, json=VENDOR_BODY)
                assert (refused.status_code, refused.json()) == (429, TOO_MANY)
                assert refused.headers["retry-after"] == "45"
                # The vendor's own machine, which authenticated before, is let in.
                assert (await client.post(VENDOR_AUTH, json=VENDOR_BODY)).status_code == 200
                frozen.move_to(START + timedelta(seconds=45))
                assert (await new_machine.post(VENDOR_AUTH, json=VENDOR_BODY)).status_code == 200


async def test_an_unknown_vendor_client_id_and_a_wrong_secret_are_one_failure_alike(
    client: httpx.AsyncClient, services: Services
) -> None:
    with freeze_time(START, real_asyncio=True):
        async with limits(services, vendor_per_address=2):
            wrong_secret = await client.post(VENDOR_AUTH, json={**VENDOR_BODY, "secret": "x" * 40})
            unknown_id = await client.post(VENDOR_AUTH, json={**VENDOR_BODY, "clientId": "other"})
            refused = await client.post(VENDOR_AUTH, json=VENDOR_BODY)
    assert wrong_secret.status_code == unknown_id.status_code == 401
    assert wrong_secret.json() == unknown_id.json() == {"errors": ["Invalid vendor credentials"]}
    assert same_headers(wrong_secret) == same_headers(unknown_id)
    assert refused.status_code == 429


async def test_vendor_limits_default_to_60_overall_and_10_per_address() -> None:
    limiter = RateLimiter(redis=None, prefix="unused:")
    assert (limiter.vendor.per_subject, limiter.vendor.per_address) == (60, 10)


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


async def test_argon2_with_a_wait_bound_queues_a_burst_whose_turn_comes_in_time() -> None:
    # Count-only, one worker thread admits 4 (the test above); an hour's wait admits them all.
    hasher = SecretHasher(Argon2Parameters(), workers=1, max_wait_seconds=3600)
    attempts = [asyncio.ensure_future(hasher.verify(None, "secret")) for _ in range(12)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    hasher.close()
    assert results == [False] * 12
    assert hasher.pending == 0
    assert hasher.job_seconds > 0


async def test_argon2_work_whose_turn_comes_after_the_wait_bound_is_refused_at_once() -> None:
    # With no wait allowed, each of the two threads takes one job and nothing queues.
    hasher = SecretHasher(Argon2Parameters(), workers=2, max_wait_seconds=0)
    admitted = [asyncio.ensure_future(hasher.verify(None, "secret")) for _ in range(2)]
    await asyncio.sleep(0)  # let both reach the pool (a turn of the loop, no time passes)
    with pytest.raises(Overloaded) as refused:
        await hasher.verify(None, "secret")
    refused_while_busy = not any(job.done() for job in admitted)
    assert await asyncio.gather(*admitted) == [False, False]
    hasher.close()
    assert refused_while_busy
    assert refused.value.retry_after == 1
    assert hasher.pending == 0


async def test_argon2_wait_bound_keeps_the_count_bound() -> None:
    hasher = SecretHasher(Argon2Parameters(), workers=1, max_pending=3, max_wait_seconds=3600)
    attempts = [asyncio.ensure_future(hasher.verify(None, "secret")) for _ in range(4)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    hasher.close()
    assert [isinstance(result, Overloaded) for result in results] == [False] * 3 + [True]


def test_argon2_wait_bound_is_a_setting_of_750_ms_by_default() -> None:
    assert load_settings(VALID_SETTINGS).argon2_max_wait_ms == 750
    assert load_settings({**VALID_SETTINGS, "M2M_ARGON2_MAX_WAIT_MS": "0"}).argon2_max_wait_ms == 0
    for wrong in ("-1", "60001", "soon", "0.5"):
        with pytest.raises(ConfigError, match="M2M_ARGON2_MAX_WAIT_MS"):
            load_settings({**VALID_SETTINGS, "M2M_ARGON2_MAX_WAIT_MS": wrong})


async def test_a_client_honouring_retry_after_gets_its_token(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    # One thread, no wait allowed, and the thread taken by a long check: the exchange is refused.
    hasher = SecretHasher(Argon2Parameters(time_cost=40), workers=1, max_wait_seconds=0)
    with replaced(services, "hasher", hasher):
        # It takes the thread at the request's first pause (Redis, long before argon2).
        occupying = asyncio.ensure_future(hasher.hash("occupies the only thread"))
        refused = await client.post(EXCHANGE, json=credential.body)
        answered_while_busy = not occupying.done()
        # The client waits what Retry-After stands for (the work ahead of it), then comes back.
        await occupying
        again = await client.post(EXCHANGE, json=credential.body)
    hasher.close()
    assert answered_while_busy
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"errors": ["Too many authentications in progress; retry shortly"]}
    assert again.status_code == 200, again.text
    assert again.json()["access_token"]
    assert hasher.pending == 0


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
