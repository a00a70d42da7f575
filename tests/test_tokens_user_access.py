"""User access tokens: /identity/resources/users/access-tokens/v1."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent
from tests.factories import Factory, build_world, stored
from tests.kinds import USER_ACCESS
from tests.steps import create, listed_ids, use_strategy, vendor_acting, verified_claims

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

PATH = USER_ACCESS.path


async def test_created_user_access_token_is_a_signed_jwt_naming_its_row(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, USER_ACCESS)
    headers = vendor_acting(vendor, USER_ACCESS, world.tenant.id, world.admin.id)

    response = await client.post(PATH, headers=headers, json={"description": "laptop"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "id",
        "description",
        "createdAt",
        "secret",
        "expires",
        "replacedBy",
        "lastUsedAt",
        "lastUsedFrom",
    }
    assert created["replacedBy"] is None  # rolled into no other token (README "Rotation")
    assert uuid.UUID(created["id"]).version == 4
    assert created["description"] == "laptop"
    assert created["expires"] is None

    claims = await verified_claims(client, vendor, created["secret"])
    assert set(claims) == {"type", "sub", "tenantId", "userId", "iss", "iat"}
    assert claims["type"] == "userAccessToken"
    assert claims["sub"] == created["id"]
    assert claims["tenantId"] == world.tenant.id
    assert claims["userId"] == world.admin.id
    assert claims["iat"] == int(datetime.fromisoformat(created["createdAt"]).timestamp())

    [row] = await stored(db, USER_ACCESS)
    assert row.id == created["id"]
    assert row.tenant_id == world.tenant.id
    assert row.user_id == world.admin.id
    assert row.created_by_user_id == world.admin.id
    assert row.expires_at is None
    # The token itself is kept nowhere: not in the row, not in the audit trail.
    stored_values = [str(getattr(row, column.key)) for column in row.__table__.columns]
    assert not any(created["secret"] in value for value in stored_values)
    details = [event.details for event in await db.scalars(sa.select(AuditEvent))]
    assert created["secret"] not in str(details)

    listed = (await client.get(PATH, headers=headers)).json()
    assert listed == {"accessTokens": [{k: v for k, v in created.items() if k != "secret"}]}


async def test_expiring_user_access_token_carries_exp(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, USER_ACCESS)
    headers = vendor_acting(vendor, USER_ACCESS, world.tenant.id, world.admin.id)
    created = await create(client, headers, USER_ACCESS, {"expiresInMinutes": 90})

    claims = await verified_claims(client, vendor, created["secret"])
    assert set(claims) == {"type", "sub", "tenantId", "userId", "iss", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 90 * 60
    assert claims["exp"] == int(datetime.fromisoformat(created["expires"]).timestamp())
    [row] = await stored(db, USER_ACCESS)
    assert row.expires_at is not None
    assert row.expires_at - row.created_at == timedelta(minutes=90)


async def test_end_user_manages_and_sees_only_its_own_user_access_tokens(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, USER_ACCESS)
    as_admin = end_user(world.admin.id, world.tenant.id)
    as_colleague = end_user(world.colleague.id, world.tenant.id)
    mine = await create(client, as_admin, USER_ACCESS)
    theirs = await create(client, as_colleague, USER_ACCESS)

    claims = await verified_claims(client, vendor, mine["secret"])
    assert claims["userId"] == world.admin.id
    assert await listed_ids(client, as_admin, USER_ACCESS) == [mine["id"]]
    assert await listed_ids(client, as_colleague, USER_ACCESS) == [theirs["id"]]
    deleted = await client.delete(f"{PATH}/{mine['id']}", headers=as_admin)
    assert deleted.status_code == 200
    assert [row.id for row in await stored(db, USER_ACCESS)] == [theirs["id"]]


async def test_user_access_token_takes_no_roles_or_metadata(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, USER_ACCESS)
    headers = vendor_acting(vendor, USER_ACCESS, world.tenant.id, world.admin.id)
    for body in ({"roleIds": [world.admin_role.id]}, {"metadata": {}}):
        response = await client.post(PATH, headers=headers, json=body)
        assert response.status_code == 400, body
    assert await stored(db, USER_ACCESS) == []
