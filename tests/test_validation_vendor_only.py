"""The vendor-only access-token routes the Frontegg SDKs call: `/active` and `/{id}`."""

from __future__ import annotations

import gzip
from datetime import timedelta

import httpx
import pytest
from freezegun import freeze_time

from domain.clock import utcnow
from tests.factories import READ, WRITE, Factory, Scene, build_scene
from tests.steps import TENANT_ACCESS, USER_ACCESS, configure, create_access_token, delete_token

pytestmark = [
    pytest.mark.both_backends,  # the same behaviour on serve and dev
    # Other tests change the database behind the cache's back: start from an empty one.
    pytest.mark.usefixtures("fresh_validity_cache"),
]

VENDOR_USERS = "/identity/resources/vendor-only/users/access-tokens/v1"
VENDOR_TENANTS = "/identity/resources/vendor-only/tenants/access-tokens/v1"
ALL_FOUR = [
    f"{VENDOR_USERS}/active",
    f"{VENDOR_TENANTS}/active",
    f"{VENDOR_USERS}/some-id",
    f"{VENDOR_TENANTS}/some-id",
]


async def active(
    client: httpx.AsyncClient, headers: dict[str, str], base: str, *, trailing: str = ""
) -> list[str]:
    response = await client.get(f"{base}/active{trailing}", headers=headers)
    assert response.status_code == 200, response.text
    ids = response.json()
    assert isinstance(ids, list)
    assert all(isinstance(item, str) for item in ids)
    return sorted(ids)


async def two_tenants_of_tokens(
    client: httpx.AsyncClient, vendor: dict[str, str], scene: Scene
) -> dict[str, str]:
    """One user and one tenant access token in each tenant, by a name for each."""
    return {
        "user": (await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id))[
            "id"
        ],
        "tenant": (await create_access_token(client, vendor, scene.tenant.id))["id"],
        "other user": (
            await create_access_token(
                client, vendor, scene.other_tenant.id, user_id=scene.other_user.id
            )
        )["id"],
        "other tenant": (await create_access_token(client, vendor, scene.other_tenant.id))["id"],
    }


async def test_active_lists_the_valid_tokens_of_every_tenant_without_a_tenant_header(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    ids = await two_tenants_of_tokens(client, vendor, scene)

    assert await active(client, vendor, VENDOR_USERS) == sorted([ids["user"], ids["other user"]])
    assert await active(client, vendor, VENDOR_TENANTS) == sorted(
        [ids["tenant"], ids["other tenant"]]
    )
    # The Frontegg SDK asks with a trailing slash.
    assert await active(client, vendor, VENDOR_USERS, trailing="/") == sorted(
        [ids["user"], ids["other user"]]
    )


async def test_active_lists_only_the_named_tenants_tokens_with_a_tenant_header(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    ids = await two_tenants_of_tokens(client, vendor, scene)
    first = {**vendor, "frontegg-tenant-id": scene.tenant.id}
    second = {**vendor, "frontegg-tenant-id": scene.other_tenant.id}
    nobody = {**vendor, "frontegg-tenant-id": "no-such-tenant"}

    assert await active(client, first, VENDOR_USERS) == [ids["user"]]
    assert await active(client, first, VENDOR_TENANTS) == [ids["tenant"]]
    assert await active(client, second, VENDOR_USERS) == [ids["other user"]]
    assert await active(client, second, VENDOR_TENANTS) == [ids["other tenant"]]
    assert await active(client, nobody, VENDOR_USERS) == []


async def test_active_leaves_out_expired_deleted_and_orphaned_tokens(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    leaver = await factory.user(scene.tenant.id, roles=[scene.reader])
    kept = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    expiring = await create_access_token(
        client, vendor, scene.tenant.id, user_id=scene.user.id, minutes=1
    )
    deleted = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    orphaned = await create_access_token(client, vendor, scene.tenant.id, user_id=leaver.id)
    assert len(await active(client, vendor, VENDOR_USERS)) == 4

    await delete_token(client, vendor, USER_ACCESS, deleted["id"], scene.tenant.id, scene.user.id)
    removed = await client.delete(f"/identity/resources/users/v1/{leaver.id}", headers=vendor)
    assert removed.status_code == 200
    assert orphaned["id"] not in await active(client, vendor, VENDOR_USERS)
    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        listed = await active(client, vendor, VENDOR_USERS)

    assert listed == [kept["id"]]
    assert expiring["id"] not in listed


async def test_active_lists_a_token_created_after_an_answer_at_once(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    first = await create_access_token(client, vendor, scene.tenant.id)
    assert await active(client, vendor, VENDOR_TENANTS) == [first["id"]]
    assert await active(client, vendor, VENDOR_TENANTS) == [first["id"]]  # kept by the process

    second = await create_access_token(client, vendor, scene.tenant.id)

    assert await active(client, vendor, VENDOR_TENANTS) == sorted([first["id"], second["id"]])


async def test_active_is_gzip_compressed_when_the_client_accepts_it(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    ids = sorted([(await create_access_token(client, vendor, scene.tenant.id))["id"] for _ in "ab"])
    url = f"{VENDOR_TENANTS}/active"

    async with client.stream("GET", url, headers={**vendor, "Accept-Encoding": "gzip"}) as sent:
        compressed = b"".join([chunk async for chunk in sent.aiter_raw()])
    plain = await client.get(url, headers={**vendor, "Accept-Encoding": "identity"})
    refused = await client.get(url, headers={**vendor, "Accept-Encoding": "br, gzip;q=0"})

    assert sent.status_code == 200
    assert sent.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in sent.headers["vary"]
    assert gzip.decompress(compressed) == plain.content
    for answer in (plain, refused):
        assert answer.status_code == 200
        assert "content-encoding" not in answer.headers
        assert sorted(answer.json()) == ids


async def test_user_access_token_data_carries_the_roles_its_user_holds_now(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(
        client, vendor, scene.tenant.id, user_id=scene.user.id, minutes=60
    )

    response = await client.get(f"{VENDOR_USERS}/{token['id']}", headers=vendor)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": token["id"],
        "tenantId": scene.tenant.id,
        "userId": scene.user.id,
        "roles": ["reader"],
        "permissions": [READ],
        "expires": token["expires"],
    }


async def test_tenant_access_token_data_carries_its_roles_and_their_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id, scene.writer.id]
    )
    headers = {**vendor, "frontegg-tenant-id": scene.tenant.id}

    response = await client.get(f"{VENDOR_TENANTS}/{token['id']}", headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": token["id"],
        "tenantId": scene.tenant.id,
        "roles": ["reader", "writer"],
        "permissions": sorted([READ, WRITE]),
    }


async def test_token_data_is_404_for_unknown_wrong_kind_or_another_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    user_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    tenant_token = await create_access_token(client, vendor, scene.tenant.id)
    elsewhere = {**vendor, "frontegg-tenant-id": scene.other_tenant.id}

    cases = [
        (f"{VENDOR_USERS}/no-such-token", vendor),
        (f"{VENDOR_TENANTS}/no-such-token", vendor),
        (f"{VENDOR_USERS}/{tenant_token['id']}", vendor),
        (f"{VENDOR_TENANTS}/{user_token['id']}", vendor),
        (f"{VENDOR_USERS}/{user_token['id']}", elsewhere),
        (f"{VENDOR_TENANTS}/{tenant_token['id']}", elsewhere),
        (f"{VENDOR_USERS}/{'x' * 255}", vendor),  # longer than any token id: still a 404
        (f"{VENDOR_TENANTS}/%C3%A9t%C3%A9%20%3A%2A", vendor),
    ]
    for path, headers in cases:
        response = await client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert set(response.json()) == {"errors"}


async def test_token_data_is_404_once_expired_or_deleted(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    expiring = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    deleted = await create_access_token(client, vendor, scene.tenant.id)
    for token in (expiring, deleted):
        assert (await client.get(f"{VENDOR_TENANTS}/{token['id']}", headers=vendor)).is_success

    await delete_token(client, vendor, TENANT_ACCESS, deleted["id"], scene.tenant.id)
    assert (
        await client.get(f"{VENDOR_TENANTS}/{deleted['id']}", headers=vendor)
    ).status_code == 404
    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        response = await client.get(f"{VENDOR_TENANTS}/{expiring['id']}", headers=vendor)
    assert response.status_code == 404


async def test_all_four_answer_403_api_tokens_are_disabled_while_m2m_is_off(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    user_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    tenant_token = await create_access_token(client, vendor, scene.tenant.id)
    paths = [
        f"{VENDOR_USERS}/active",
        f"{VENDOR_TENANTS}/active",
        f"{VENDOR_USERS}/{user_token['id']}",
        f"{VENDOR_TENANTS}/{tenant_token['id']}",
    ]
    unknown = f"{VENDOR_TENANTS}/no-such-token"
    for path in paths:
        assert (await client.get(path, headers=vendor)).status_code == 200, path

    await configure(client, vendor, apiTokensEnabled=False)

    for path in [*paths, unknown]:
        response = await client.get(path, headers=vendor)
        assert response.status_code == 403, path
        assert response.json() == {"errors": ["Api tokens are disabled"]}
    await configure(client, vendor, apiTokensEnabled=True)
    for path in paths:
        assert (await client.get(path, headers=vendor)).status_code == 200, path


@pytest.mark.parametrize("path", ALL_FOUR)
async def test_only_the_vendor_may_call_them(
    path: str, client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)

    for headers in ({}, {"x-access-token": token["secret"]}, {"X-API-KEY": token["secret"]}):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"errors"}
