"""Redis slow rather than down (DEBUG SLEEP) or full (`maxmemory` under `noeviction`): validation
stays correct (PostgreSQL answers, never a wrong 200 for a revoked token) within its bound, the
rate limiter and the exchange answer without hanging, and everything recovers once Redis answers
again. Every test here uses a private redis-server: never the shared one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.state import Services
from domain.clock import utcnow
from domain.errors import Unauthenticated
from domain.models import AccessToken
from domain.settings import Settings
from domain.validity import ACCESS_TOKEN_TYPES, ValidityCache
from tests.factories import Factory, build_scene
from tests.processes import PrivateRedis, Stack
from tests.steps import (
    EXCHANGE,
    REFRESH,
    TENANT_ACCESS,
    VALIDATE,
    configure,
    create_access_token,
    delete_token,
    serving,
    tenant_credential,
    until,
)

# Whatever fails, no request here may take longer: a hang fails the test, not the run.
HANG_GUARD_SECONDS = 15
# What a request may spend on a Redis that does not answer (the README's "When PostgreSQL or
# Redis fail": 0.3 s on the cache, or 0.25 s on the limiter and 0.25 s on the broker), with room
# for a loaded test machine.
BOUND_SECONDS = 1.0


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        response = await request
    return response, loop.time() - start


async def validate(stack: Stack, token: str) -> httpx.Response:
    return await stack.client.post(VALIDATE, headers={"X-API-KEY": token})


# --- slow: DEBUG SLEEP ------------------------------------------------------------------------


async def test_while_redis_sleeps_validation_answers_within_its_bound_and_never_a_revoked_token(
    stack: Stack, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    kept = await create_access_token(stack.client, vendor, scene.tenant.id)
    revoked = await create_access_token(stack.client, vendor, scene.tenant.id)
    for token in (kept, revoked, kept, revoked):  # in Redis, and in this process's memory
        assert (await validate(stack, token["secret"])).status_code == 200

    sleeper = stack.redis.sleep(2)
    # Deleted by another process, whose tombstone waits behind the sleep: PostgreSQL knows.
    async with services.sessions() as session:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id == revoked["id"]))
        await session.commit()
    # Within the propagation bound memory may still answer for it; past it (the heartbeat
    # unanswered for longer than memory is trusted), never.
    await until(lambda: not stack.services.validity.listening, "the heartbeat goes unanswered")
    valid, took_valid = await timed(validate(stack, kept["secret"]))
    refused, took_refused = await timed(validate(stack, revoked["secret"]))
    created = await create_access_token(stack.client, vendor, scene.tenant.id)
    cold, took_cold = await timed(validate(stack, created["secret"]))
    await asyncio.to_thread(sleeper.join)

    await until(lambda: stack.services.validity.listening, "the subscription answers again")
    after = [await validate(stack, token["secret"]) for token in (kept, revoked, created)]

    assert valid.status_code == 200
    assert refused.status_code == 401
    assert cold.status_code == 200
    assert max(took_valid, took_refused, took_cold) < BOUND_SECONDS
    assert [response.status_code for response in after] == [200, 401, 200]


async def test_while_redis_sleeps_exchange_and_refresh_are_answered_within_their_bound(
    private_redis: PrivateRedis,
    settings: Settings,
    engine: AsyncEngine,
    vendor: dict[str, str],
    factory: Factory,
) -> None:
    # Redis as the cache, the rate limiter and the job broker, as one Redis usually is.
    own = dataclasses.replace(settings, redis_url=private_redis.url, broker_url=private_redis.url)
    scene = await build_scene(factory)
    async with serving(own) as (_, client):
        credential = await tenant_credential(
            client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
        )
        sleeper = private_redis.sleep(3)
        # Its first exchange: counted by the limiter, and it enqueues the credential's pruning.
        exchanged, took_exchange = await timed(client.post(EXCHANGE, json=credential.body))
        refreshed, took_refresh = await timed(
            client.post(REFRESH, json={"refreshToken": exchanged.json()["refresh_token"]})
        )
        await asyncio.to_thread(sleeper.join)
        after = await client.post(EXCHANGE, json=credential.body)

    assert exchanged.status_code == 200, exchanged.text
    assert refreshed.status_code == 200, refreshed.text
    assert max(took_exchange, took_refresh) < BOUND_SECONDS, (took_exchange, took_refresh)
    assert after.status_code == 200


# --- full: maxmemory under noeviction ---------------------------------------------------------


async def test_with_redis_full_a_deleted_token_is_refused_by_every_process_at_once(
    stack: Stack,
    bystander: ValidityCache,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200  # "valid" in Redis now
    await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())

    stack.redis.fill_up()
    await delete_token(stack.client, vendor, TENANT_ACCESS, token["id"], scene.tenant.id)
    here = await validate(stack, token["secret"])
    with pytest.raises(Unauthenticated, match="Token is not valid"):
        await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
    stack.redis.make_room()

    assert here.status_code == 401
    await until(
        lambda: stack.redis.get(stack.settings.redis_prefix, f"at:{token['id']}") == b"-",
        "the delayed tombstone lands once Redis takes writes again",
    )


async def test_with_redis_full_switching_m2m_off_takes_effect_in_every_process_at_once(
    stack: Stack,
    bystander: ValidityCache,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200
    await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())

    stack.redis.fill_up()
    await configure(stack.client, vendor, apiTokensEnabled=False)
    here = await validate(stack, token["secret"])
    with pytest.raises(Unauthenticated, match="Api tokens are disabled"):
        await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
    stack.redis.make_room()

    assert here.json() == {"errors": ["Api tokens are disabled"]}


async def test_with_redis_full_tokens_are_created_exchanged_and_validated(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    stack.redis.fill_up()
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    validated, took = await timed(validate(stack, token["secret"]))
    await configure(stack.client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    credential = await tenant_credential(
        stack.client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    exchanged = await stack.client.post(EXCHANGE, json=credential.body)
    stack.redis.make_room()

    assert validated.status_code == 200
    assert took < BOUND_SECONDS
    assert exchanged.status_code == 200, exchanged.text
