"""User client credentials: /identity/resources/users/api-tokens/v1."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import ClientCredential
from tests.factories import Factory, build_world, stored
from tests.kinds import USER_API
from tests.steps import assert_argon2id_hash_of, create, listed_ids, vendor_acting

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

PATH = USER_API.path


async def test_created_user_api_token_has_frontegg_fields_and_only_a_hash_is_stored(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id)

    response = await client.post(
        PATH,
        headers=headers,
        json={"description": "deploy bot", "metadata": {"team": "ops"}, "expiresInMinutes": 60},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    # Frontegg's fields, the secret, and the last use (none yet) beside them.
    assert set(created) == {
        "clientId",
        "description",
        "metadata",
        "createdAt",
        "secret",
        "expires",
        "rotatedAt",
        "previousSecretExpires",
        "previousSecretLastUsedAt",
        "lastUsedAt",
        "lastUsedFrom",
    }
    # Never rotated (README "Rotation"), never used.
    assert created["rotatedAt"] is created["previousSecretExpires"] is None
    assert (created["lastUsedAt"], created["lastUsedFrom"]) == (None, [])
    assert uuid.UUID(created["clientId"]).version == 4
    assert created["description"] == "deploy bot"
    assert created["metadata"] == {"team": "ops"}
    assert created["createdAt"].endswith("Z")
    assert created["expires"].endswith("Z")

    [row] = await stored(db, USER_API)
    assert row.client_id == created["clientId"]
    assert row.tenant_id == world.tenant.id
    assert row.user_id == world.admin.id
    assert row.created_by_user_id == world.admin.id
    assert row.metadata_json == {"team": "ops"}
    assert row.expires_at is not None
    assert_argon2id_hash_of(row.secret_hash, created["secret"])

    listed = (await client.get(PATH, headers=headers)).json()
    assert listed == [{key: value for key, value in created.items() if key != "secret"}]


async def test_user_api_token_without_optional_fields_never_expires(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    created = await create(
        client, vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id), USER_API
    )
    assert created["expires"] is None
    assert created["metadata"] == {}
    assert created["description"] is None


async def test_each_user_api_token_gets_its_own_secret(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id)
    first = await create(client, headers, USER_API)
    second = await create(client, headers, USER_API)
    assert first["secret"] != second["secret"]
    assert first["clientId"] != second["clientId"]


async def test_end_user_manages_and_sees_only_its_own_user_api_tokens(
    client: httpx.AsyncClient, end_user: Any, factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    as_admin = end_user(world.admin.id, world.tenant.id)
    as_colleague = end_user(world.colleague.id, world.tenant.id)
    mine = await create(client, as_admin, USER_API)
    theirs = await create(client, as_colleague, USER_API)

    assert await listed_ids(client, as_admin, USER_API) == [mine["clientId"]]
    assert await listed_ids(client, as_colleague, USER_API) == [theirs["clientId"]]
    deleted = await client.delete(f"{PATH}/{mine['clientId']}", headers=as_admin)
    assert deleted.status_code == 200
    remaining = await stored(db, USER_API)
    assert [row.client_id for row in remaining] == [theirs["clientId"]]


async def test_user_api_token_takes_no_roles_or_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id)
    for body in ({"roleIds": [world.admin_role.id]}, {"permissionIds": []}):
        response = await client.post(PATH, headers=headers, json=body)
        assert response.status_code == 400, body
    assert await stored(db, USER_API) == []


async def test_metadata_must_be_a_small_json_object(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id)
    for metadata in ("text", [1], None, {"blob": "x" * 9000}, {"k": "nul\x00"}):
        response = await client.post(PATH, headers=headers, json={"metadata": metadata})
        assert response.status_code == 400, metadata
        assert "metadata" in response.json()["errors"][0]
    assert list(await db.scalars(sa.select(ClientCredential))) == []
