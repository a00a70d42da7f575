"""The validity cache when Redis (or Redis and PostgreSQL) fail: correct answers or 503, never a
wrong 200. Every test here uses a private redis-server, which it flushes, pauses or kills."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from api.state import Services
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.errors import Unauthenticated
from domain.models import AccessToken
from domain.validity import ACCESS_TOKEN_TYPES, ValidityCache
from tests.factories import Factory, build_scene
from tests.processes import PrivateRedis, Stack, free_port, redis_client
from tests.steps import TENANT_ACCESS, VALIDATE, configure, create_access_token, delete_token, until


async def validate(stack: Stack, token: str) -> httpx.Response:
    return await stack.client.post(VALIDATE, headers={"X-API-KEY": token})


def flushall(server: PrivateRedis) -> None:
    with server.client() as probe:
        probe.flushall()


# --- a flush ----------------------------------------------------------------------------------


async def test_flushall_never_makes_a_deleted_token_valid(
    stack: Stack,
    bystander: ValidityCache,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200
    await delete_token(stack.client, vendor, TENANT_ACCESS, token["id"], scene.tenant.id)

    flushall(stack.redis)

    assert (await validate(stack, token["secret"])).status_code == 401
    with pytest.raises(Unauthenticated, match="Token is not valid"):
        await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
    assert stack.redis.get(stack.settings.redis_prefix, f"at:{token['id']}") == b"-"


async def test_flushall_never_makes_a_disabled_environment_enabled(
    stack: Stack,
    bystander: ValidityCache,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200
    await configure(stack.client, vendor, apiTokensEnabled=False)

    flushall(stack.redis)

    assert (await validate(stack, token["secret"])).json() == {
        "errors": ["Api tokens are disabled"]
    }
    with pytest.raises(Unauthenticated, match="Api tokens are disabled"):
        await bystander.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
    assert stack.redis.get(stack.settings.redis_prefix, "env") == b"0"


# --- Redis down -------------------------------------------------------------------------------


async def test_a_process_that_loses_its_subscription_stops_answering_from_memory_at_once(
    stack: Stack, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    for _ in range(2):
        assert (await validate(stack, token["secret"])).status_code == 200

    stack.redis.kill()
    took = await until(lambda: not stack.services.validity.listening, "memory is distrusted")
    # Deleted where no invalidation can reach the process: only PostgreSQL knows.
    async with services.sessions() as session:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id == token["id"]))
        await session.commit()

    assert took < 0.1
    response = await validate(stack, token["secret"])
    assert response.status_code == 401
    assert response.json() == {"errors": ["Token is not valid"]}


async def test_with_redis_down_validation_answers_from_postgresql(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    kept = await create_access_token(stack.client, vendor, scene.tenant.id, user_id=scene.user.id)
    doomed = await create_access_token(stack.client, vendor, scene.tenant.id)
    for token in (kept, doomed):
        assert (await validate(stack, token["secret"])).status_code == 200

    stack.redis.kill()
    await delete_token(stack.client, vendor, TENANT_ACCESS, doomed["id"], scene.tenant.id)
    cold = await create_access_token(stack.client, vendor, scene.tenant.id)

    valid = await validate(stack, kept["secret"])
    assert valid.status_code == 200
    assert valid.json()["roles"] == ["reader"]
    assert (await validate(stack, cold["secret"])).status_code == 200
    assert (await validate(stack, doomed["secret"])).status_code == 401
    await configure(stack.client, vendor, apiTokensEnabled=False)
    assert (await validate(stack, kept["secret"])).status_code == 401


async def test_with_redis_and_postgresql_down_validation_answers_503_never_200(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    warm = await create_access_token(stack.client, vendor, scene.tenant.id)
    cold = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, warm["secret"])).status_code == 200  # now in Redis
    dead_engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    cut_off = ValidityCache(
        redis=stack.services.redis,
        sessions=create_session_factory(dead_engine),
        prefix=stack.settings.redis_prefix,
    )
    await cut_off.start()
    app = create_app(stack.settings)
    app.state.services = dataclasses.replace(stack.services, validity=cut_off)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://m2m.test") as client:
            await until(lambda: cut_off.listening, "the cut-off process listens")
            from_redis = await client.post(VALIDATE, headers={"X-API-KEY": warm["secret"]})
            no_database = await client.post(VALIDATE, headers={"X-API-KEY": cold["secret"]})
            for _ in range(2):  # and now in its memory too
                assert (
                    await client.post(VALIDATE, headers={"X-API-KEY": warm["secret"]})
                ).is_success

            stack.redis.kill()
            await until(lambda: not cut_off.listening, "memory is distrusted")
            neither = await client.post(VALIDATE, headers={"X-API-KEY": warm["secret"]})
    finally:
        await cut_off.close()
        await dead_engine.dispose()

    assert from_redis.status_code == 200
    assert no_database.status_code == 503
    assert neither.status_code == 503
    assert neither.json() == {"errors": ["Service temporarily unavailable"]}


async def test_a_silent_redis_costs_one_timeout_not_one_per_validation(
    vendor: dict[str, str], factory: Factory, client: httpx.AsyncClient, services: Services
) -> None:
    received: list[bytes] = []  # what each connection sent before it was dropped

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent = bytearray()
        received.append(b"")
        index = len(received) - 1
        while chunk := await reader.read(65536):
            sent.extend(chunk)
            received[index] = bytes(sent)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = redis_client(f"redis://127.0.0.1:{port}/0")
    cache = ValidityCache(redis=silent, sessions=services.sessions, prefix="silent:")
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)
    try:
        answers = [
            await cache.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
            for _ in range(20)
        ]
        reading_redis = cache.reading_redis
    finally:
        await silent.aclose()
        server.close()

    # Every validation is answered (from PostgreSQL), but only the first one asked Redis (its
    # connection's greeting went unanswered): that timeout opened the breaker, and the other
    # nineteen did not wait on Redis at all.
    assert [answer.tenant_id for answer in answers] == [str(scene.tenant.id)] * 20
    assert len(received) == 1, received
    assert received[0].count(b"\r\n*") == 0, received  # one command, no second one behind it
    assert not reading_redis


# --- cache writes that fail -------------------------------------------------------------------


async def test_a_deletion_whose_cache_write_fails_still_ends_the_token_on_its_process(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200
    key = f"at:{token['id']}"
    with stack.redis.client() as admin:
        admin.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        try:
            await delete_token(stack.client, vendor, TENANT_ACCESS, token["id"], scene.tenant.id)
            stale = stack.redis.get(stack.settings.redis_prefix, key)
            response = await validate(stack, token["secret"])
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")

    assert stale is not None
    assert stale != b"-"  # Redis still says "valid"; this process knows better
    assert response.status_code == 401
    await until(
        lambda: stack.redis.get(stack.settings.redis_prefix, key) == b"-",
        "the delayed tombstone lands",
    )


async def test_a_switch_whose_cache_write_fails_still_takes_effect_on_its_process(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200
    with stack.redis.client() as admin:
        admin.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        try:
            await configure(stack.client, vendor, apiTokensEnabled=False)
            # Even once reads go back to Redis, which still says "enabled":
            await until(lambda: stack.services.validity.reading_redis, "the breaker closes")
            stale = stack.redis.get(stack.settings.redis_prefix, "env")
            response = await validate(stack, token["secret"])
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")

    assert stale == b"1"
    assert response.json() == {"errors": ["Api tokens are disabled"]}


async def test_tombstones_that_missed_redis_are_written_once_it_is_back(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    assert (await validate(stack, token["secret"])).status_code == 200

    stack.redis.kill()
    await delete_token(stack.client, vendor, TENANT_ACCESS, token["id"], scene.tenant.id)
    stack.redis.start()  # empty, on the same port

    await until(
        lambda: stack.redis.get(stack.settings.redis_prefix, f"at:{token['id']}") == b"-",
        "the delayed tombstone lands",
    )
    await until(lambda: stack.services.validity.listening, "the subscription is back")
    assert (await validate(stack, token["secret"])).status_code == 401


async def test_a_subscription_cut_and_restored_never_leaves_stale_copies_in_memory(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    for _ in range(2):
        assert (await validate(stack, token["secret"])).status_code == 200
    prefix = stack.settings.redis_prefix

    with stack.redis.client() as admin:
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        # A deletion announced while no subscription could hear it:
        admin.set(f"{prefix}v:at:{token['id']}", b"-", ex=60)
    cut = asyncio.get_running_loop().time()
    validity = stack.services.validity
    await until(lambda: validity.current_as_of > cut, "a subscription made since is current")

    assert (await validate(stack, token["secret"])).status_code == 401


async def test_readiness_answers_503_naming_redis_while_it_is_down(stack: Stack) -> None:
    up = await stack.client.get("/health/ready")
    stack.redis.kill()
    down = await stack.client.get("/health/ready")
    live = await stack.client.get("/health/live")

    assert up.json()["checks"]["redis"] == "ok"
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert down.json()["status"] == "not ready"
    assert down.json()["errors"] == ["Not ready: redis unavailable"]  # as every 503 answers
    assert down.json()["checks"]["redis"] == "unavailable"
    assert down.json()["checks"]["database"] == "ok"
    assert live.status_code == 200
