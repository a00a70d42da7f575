"""Two real API processes (`m2m serve`) on one PostgreSQL and one Redis: a change made through
one is in effect on the other within 100 ms of its response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.state import Services
from domain.settings import Settings
from tests.factories import Factory, build_scene
from tests.processes import running_server
from tests.steps import (
    CONFIG,
    TENANT_ACCESS,
    TENANT_API,
    TENANT_API_V2,
    USER_ACCESS,
    VALIDATE,
    credential_jwt,
)

pytestmark = [
    pytest.mark.processes,  # two `m2m serve` processes for the module
    pytest.mark.usefixtures("fresh_validity_cache"),
]

PROMISE_SECONDS = 0.1


@pytest.fixture(scope="module")
def two_servers(settings: Settings) -> Iterator[tuple[str, str]]:
    with running_server(settings) as first, running_server(settings) as second:
        yield first, second


@dataclass
class Pair:
    a: httpx.AsyncClient
    b: httpx.AsyncClient


@pytest.fixture
async def pair(two_servers: tuple[str, str], engine: object) -> AsyncIterator[Pair]:
    first, second = two_servers
    async with httpx.AsyncClient(base_url=first) as a, httpx.AsyncClient(base_url=second) as b:
        yield Pair(a=a, b=b)


async def status_of(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await client.post(VALIDATE, headers=headers)).status_code


async def seconds_until_b_says(
    pair: Pair, headers: dict[str, str], status: int, since: float
) -> float:
    """Poll process B until it answers `status`; seconds from `since` (A's response)."""
    loop = asyncio.get_running_loop()
    while await status_of(pair.b, headers) != status:
        if loop.time() - since > 5:
            raise AssertionError(f"B never answered {status}")
    return loop.time() - since


async def created(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(path, headers=headers, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def use_access_tokens(pair: Pair, vendor: dict[str, str]) -> None:
    config = {"machineToMachineAuthStrategy": "AccessToken"}
    assert (await pair.a.post(CONFIG, headers=vendor, json=config)).status_code == 201


async def test_a_deletion_through_one_process_is_in_effect_on_the_other_within_100_ms(
    pair: Pair,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    tenant = {**vendor, "frontegg-tenant-id": scene.tenant.id}
    credential = await created(pair.a, TENANT_API_V2, tenant, {"roleIds": [scene.reader.id]})
    jwt_token = credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)
    await use_access_tokens(pair, vendor)
    user_token = await created(
        pair.a, USER_ACCESS, {**tenant, "frontegg-user-id": scene.user.id}, {}
    )
    tenant_token = await created(pair.a, TENANT_ACCESS, tenant, {"roleIds": []})
    cases = [
        ({"Authorization": f"Bearer {jwt_token}"}, f"{TENANT_API}/{credential['clientId']}", {}),
        (
            {"X-API-KEY": user_token["secret"]},
            f"{USER_ACCESS}/{user_token['id']}",
            {"frontegg-user-id": scene.user.id},
        ),
        ({"X-API-KEY": tenant_token["secret"]}, f"{TENANT_ACCESS}/{tenant_token['id']}", {}),
    ]
    for headers, _, _ in cases:
        for client in (pair.a, pair.b, pair.b):  # B's second answer comes from its memory
            assert await status_of(client, headers) == 200

    loop = asyncio.get_running_loop()
    for headers, path, extra in cases:
        deleted = await pair.a.delete(path, headers={**tenant, **extra})
        answered = loop.time()
        assert deleted.status_code == 200, deleted.text
        assert await status_of(pair.a, headers) == 401
        took = await seconds_until_b_says(pair, headers, 401, answered)
        assert took < PROMISE_SECONDS, f"B still accepted it {took * 1000:.0f} ms later"


async def test_switching_m2m_through_one_process_is_in_effect_on_the_other_within_100_ms(
    pair: Pair, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    tenant = {**vendor, "frontegg-tenant-id": scene.tenant.id}
    await use_access_tokens(pair, vendor)
    kept = await created(pair.a, TENANT_ACCESS, tenant, {"roleIds": [scene.reader.id]})
    doomed = await created(pair.a, TENANT_ACCESS, tenant, {"roleIds": []})
    kept_headers = {"X-API-KEY": kept["secret"]}
    doomed_headers = {"X-API-KEY": doomed["secret"]}
    for headers in (kept_headers, doomed_headers):
        for client in (pair.a, pair.b, pair.b):
            assert await status_of(client, headers) == 200
    loop = asyncio.get_running_loop()

    off = await pair.a.post(CONFIG, headers=vendor, json={"apiTokensEnabled": False})
    answered = loop.time()
    assert off.status_code == 201
    assert await status_of(pair.a, kept_headers) == 401
    took_off = await seconds_until_b_says(pair, kept_headers, 401, answered)
    deleted = await pair.a.delete(f"{TENANT_ACCESS}/{doomed['id']}", headers=tenant)
    assert deleted.status_code == 200

    on = await pair.a.post(CONFIG, headers=vendor, json={"apiTokensEnabled": True})
    answered = loop.time()
    assert on.status_code == 201
    assert await status_of(pair.a, kept_headers) == 200
    took_on = await seconds_until_b_says(pair, kept_headers, 200, answered)

    assert took_off < PROMISE_SECONDS, f"B still accepted tokens {took_off * 1000:.0f} ms later"
    assert took_on < PROMISE_SECONDS, f"B still refused tokens {took_on * 1000:.0f} ms later"
    for client in (pair.a, pair.b):
        assert await status_of(client, doomed_headers) == 401
        assert await status_of(client, kept_headers) == 200


ACTIVE_TENANT_TOKENS = "/identity/resources/vendor-only/tenants/access-tokens/v1/active"


async def seconds_until_b_lists(
    pair: Pair, vendor: dict[str, str], token_id: str, listed: bool, since: float
) -> float:
    """Poll process B's /active until it lists `token_id` (or no longer does)."""
    loop = asyncio.get_running_loop()
    while True:
        answer = await pair.b.get(ACTIVE_TENANT_TOKENS, headers=vendor)
        assert answer.status_code == 200, answer.text
        if (token_id in answer.json()) == listed:
            return loop.time() - since
        if loop.time() - since > 5:
            raise AssertionError(f"B's /active never {'listed' if listed else 'dropped'} it")


async def test_active_on_the_other_process_changes_within_100_ms_of_a_creation_or_deletion(
    pair: Pair, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    tenant = {**vendor, "frontegg-tenant-id": scene.tenant.id}
    await use_access_tokens(pair, vendor)
    first = await created(pair.a, TENANT_ACCESS, tenant, {"roleIds": []})
    for _ in range(2):  # B's second answer is the one it keeps
        assert first["id"] in (await pair.b.get(ACTIVE_TENANT_TOKENS, headers=vendor)).json()
    loop = asyncio.get_running_loop()

    second = await created(pair.a, TENANT_ACCESS, tenant, {"roleIds": []})
    took_created = await seconds_until_b_lists(pair, vendor, second["id"], True, loop.time())
    deleted = await pair.a.delete(f"{TENANT_ACCESS}/{first['id']}", headers=tenant)
    answered = loop.time()
    assert deleted.status_code == 200
    took_deleted = await seconds_until_b_lists(pair, vendor, first["id"], False, answered)

    assert took_created < PROMISE_SECONDS, f"B listed it {took_created * 1000:.0f} ms later"
    assert took_deleted < PROMISE_SECONDS, f"B still listed it {took_deleted * 1000:.0f} ms later"
    for client in (pair.a, pair.b):
        listed = (await client.get(ACTIVE_TENANT_TOKENS, headers=vendor)).json()
        assert second["id"] in listed
        assert first["id"] not in listed
