"""The validity cache: what a warm validation costs, and how an invalidation wins every race."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from api.state import Services
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.settings import Settings
from domain.validity import ACCESS_TOKEN_TYPES, CREDENTIAL_TYPES, ENTRY_TTL_SECONDS, ValidityCache
from tests.factories import Factory, build_scene
from tests.processes import Stack, redis_client
from tests.steps import (
    TENANT_ACCESS,
    TENANT_API,
    configure,
    create_access_token,
    create_credential,
    credential_jwt,
    delete_token,
    until,
)

pytestmark = pytest.mark.usefixtures("fresh_validity_cache")


class QueryCounter:
    """Statements sent to PostgreSQL through one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        self._engine = engine

    def __enter__(self) -> QueryCounter:
        event.listen(self._engine.sync_engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


# --- what a validation costs ------------------------------------------------------------------


async def test_a_warm_validation_asks_postgresql_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    headers = {"X-API-KEY": token["secret"]}

    with QueryCounter(services.engine) as cold:
        assert (
            await client.post("/identity/resources/auth/v1/validate", headers=headers)
        ).is_success
    with QueryCounter(services.engine) as warm:
        for _ in range(5):
            response = await client.post("/identity/resources/auth/v1/validate", headers=headers)
            assert response.status_code == 200

    assert cold.count == 1  # one statement fills every entry a validation needs
    assert warm.count == 0


async def test_a_listening_process_answers_warm_validations_from_memory(
    stack: Stack, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    headers = {"X-API-KEY": token["secret"]}
    assert (
        await stack.client.post("/identity/resources/auth/v1/validate", headers=headers)
    ).is_success
    before = stack.redis.calls("mget")

    with QueryCounter(stack.services.engine) as queries:
        for _ in range(5):
            await until(lambda: stack.services.validity.listening, "the subscription is current")
            response = await stack.client.post(
                "/identity/resources/auth/v1/validate", headers=headers
            )
            assert response.status_code == 200

    assert stack.redis.calls("mget") == before
    assert queries.count == 0


async def test_a_token_in_steady_use_is_read_again_behind_its_answers_never_before_one(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    cache, start = services.validity, utcnow()

    async def validate(seconds_later: float) -> list[str]:
        now = start + timedelta(seconds=seconds_later)
        validated = await cache.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, now)
        return list(validated.roles)

    assert await validate(0) == [scene.reader.key]  # filled
    taken = await client.request(
        "DELETE",
        f"/identity/resources/users/v1/{scene.user.id}/roles",
        headers={**vendor, "frontegg-tenant-id": scene.tenant.id},
        json={"roleIds": [scene.reader.id]},
    )
    assert taken.status_code == 200, taken.text
    # Past half of its entry's life: answered from memory at once (the role change is within
    # the 60 s the README allows), and the entry is read again behind the answer.
    await until(lambda: cache.listening, "the subscription is current")
    with QueryCounter(services.engine) as behind:
        answered = await validate(ENTRY_TTL_SECONDS * 0.75)
        answered_with = behind.count
        await until(lambda: not cache.refreshing, "the entry is read again in the background")
    assert behind.count == 1
    assert answered == [scene.reader.key]
    assert answered_with == 0
    # Past the first entry's life: the entry read again answers with no statement, and shows
    # the change.
    await until(lambda: cache.listening, "the subscription is current")
    with QueryCounter(services.engine) as later:
        assert await validate(ENTRY_TTL_SECONDS + 5) == []
    assert later.count == 0


async def test_without_a_listener_warm_validations_read_redis_and_not_postgresql(
    stack: Stack, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(stack.client, vendor, scene.tenant.id)
    client = redis_client(stack.redis.url)
    worker = ValidityCache(
        redis=client, sessions=services.sessions, prefix=stack.settings.redis_prefix
    )
    try:
        await worker.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow())
        before = stack.redis.calls("mget")
        with QueryCounter(services.engine) as queries:
            for _ in range(3):
                await worker.validate(
                    services.keyring, token["secret"], ACCESS_TOKEN_TYPES, utcnow()
                )
    finally:
        await client.aclose()

    assert queries.count == 0
    assert stack.redis.calls("mget") == before + 3


async def test_the_memory_backend_serves_one_process_with_the_same_rules(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    kept = await create_access_token(client, vendor, scene.tenant.id)
    deleted = await create_access_token(client, vendor, scene.tenant.id)
    memory = ValidityCache(redis=None, sessions=services.sessions, prefix="unused:")
    await memory.start()
    now = utcnow()
    for token in (kept, deleted):
        await memory.validate(services.keyring, token["secret"], ACCESS_TOKEN_TYPES, now)

    with QueryCounter(services.engine) as warm:
        await memory.validate(services.keyring, kept["secret"], ACCESS_TOKEN_TYPES, now)
    await delete_token(client, vendor, TENANT_ACCESS, deleted["id"], scene.tenant.id)
    await memory.invalidate_tokens(access_token_ids=[deleted["id"]])

    assert warm.count == 0
    with pytest.raises(Exception, match="Token is not valid"):
        await memory.validate(services.keyring, deleted["secret"], ACCESS_TOKEN_TYPES, now)
    await configure(client, vendor, apiTokensEnabled=False)
    await memory.set_m2m_switch(False)
    with pytest.raises(Exception, match="Api tokens are disabled"):
        await memory.validate(services.keyring, kept["secret"], ACCESS_TOKEN_TYPES, now)
    await configure(client, vendor, apiTokensEnabled=True)
    await memory.set_m2m_switch(True)
    await memory.validate(services.keyring, kept["secret"], ACCESS_TOKEN_TYPES, now)
    await memory.close()


# --- races ------------------------------------------------------------------------------------


class PausedFills:
    """An engine whose validity fills stop after reading PostgreSQL until released: the window
    in which a deletion can overtake a fill that has already seen the token alive."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)
        self.sessions = create_session_factory(self.engine)
        self.paused = asyncio.Event()
        self.release = asyncio.Event()
        event.listen(self.engine.sync_engine, "after_cursor_execute", self._after)

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_tokens_enabled" in statement and not self.release.is_set():
            self.paused.set()
            await_only(self.release.wait())


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "not listening"])
async def test_a_fill_overtaken_by_a_deletion_never_brings_the_token_back(
    listening: bool,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    token = credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)
    fills = PausedFills(settings.database_url)
    other = ValidityCache(
        redis=services.redis, sessions=fills.sessions, prefix=settings.redis_prefix
    )
    if listening:
        await other.start()
        await until(lambda: other.listening, "the other process listens")
    try:
        racing = asyncio.create_task(
            other.validate(services.keyring, token, CREDENTIAL_TYPES, utcnow())
        )
        await asyncio.wait_for(fills.paused.wait(), 5)  # it has read the credential: alive
        deleted_at = asyncio.get_running_loop().time()
        await delete_token(client, vendor, TENANT_API, credential["clientId"], scene.tenant.id)
        if listening:  # the other process has heard of the deletion before its fill finishes
            await until(lambda: other.current_as_of > deleted_at, "the invalidation arrives")
        fills.release.set()
        await racing  # the overtaken answer itself was right when it was read

        with pytest.raises(Exception, match="Token is not valid"):
            await other.validate(services.keyring, token, CREDENTIAL_TYPES, utcnow())
        stored = await services.redis.get(f"{settings.redis_prefix}v:cc:{credential['clientId']}")
        assert stored == b"-"
    finally:
        await other.close()
        await fills.engine.dispose()
