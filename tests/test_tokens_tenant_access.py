"""Tenant access tokens: /identity/resources/tenants/access-tokens/v1."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import access_token_roles
from tests.factories import Factory, World, build_world, stored
from tests.kinds import TENANT_ACCESS, USER_ACCESS
from tests.steps import create, listed_ids, use_strategy, vendor_acting, verified_claims

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

PATH = TENANT_ACCESS.path


def as_vendor(vendor: dict[str, str], world: World) -> dict[str, str]:
    return {**vendor, "frontegg-tenant-id": world.tenant.id}


async def roles_of(db: AsyncSession, token_id: str) -> list[str]:
    rows = await db.scalars(
        sa.select(access_token_roles.c.role_id).where(access_token_roles.c.token_id == token_id)
    )
    return sorted(rows)


async def test_created_tenant_access_token_is_a_signed_jwt_with_its_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    first = await factory.role(tenant_id=world.tenant.id)
    second = await factory.role()
    response = await client.post(
        PATH,
        headers=as_vendor(vendor, world),
        json={"description": "reporting", "roleIds": [first.id, second.id]},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "id",
        "description",
        "createdAt",
        "secret",
        "expires",
        "roleIds",
        "createdByUserId",
        "replacedBy",
        "lastUsedAt",
        "lastUsedFrom",
    }
    assert created["replacedBy"] is None  # rolled into no other token (README "Rotation")
    assert uuid.UUID(created["id"]).version == 4
    assert created["roleIds"] == sorted([first.id, second.id])
    assert created["createdByUserId"] is None
    assert created["expires"] is None

    claims = await verified_claims(client, vendor, created["secret"])
    assert set(claims) == {"type", "sub", "tenantId", "iss", "iat"}
    assert claims["type"] == "tenantAccessToken"
    assert claims["sub"] == created["id"]
    assert claims["tenantId"] == world.tenant.id

    [row] = await stored(db, TENANT_ACCESS)
    assert row.id == created["id"]
    assert row.user_id is None
    assert row.description == "reporting"
    assert await roles_of(db, row.id) == sorted([first.id, second.id])
    stored_values = [str(getattr(row, column.key)) for column in row.__table__.columns]
    assert not any(created["secret"] in value for value in stored_values)

    listed = (await client.get(PATH, headers=as_vendor(vendor, world))).json()
    assert listed == {"accessTokens": [{k: v for k, v in created.items() if k != "secret"}]}


async def test_expiring_tenant_access_token_carries_exp(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    created = await create(
        client, as_vendor(vendor, world), TENANT_ACCESS, {"expiresInMinutes": 10_080}
    )
    claims = await verified_claims(client, vendor, created["secret"])
    assert set(claims) == {"type", "sub", "tenantId", "iss", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 10_080 * 60
    assert claims["exp"] == int(datetime.fromisoformat(created["expires"]).timestamp())


async def test_tenant_access_token_may_have_no_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    created = await create(client, as_vendor(vendor, world), TENANT_ACCESS)
    assert created["roleIds"] == []
    assert await roles_of(db, created["id"]) == []


async def test_end_user_cannot_give_a_role_it_does_not_hold_but_can_one_it_holds(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    not_held = await factory.role(tenant_id=world.tenant.id)
    headers = end_user(world.admin.id, world.tenant.id)

    refused = await client.post(PATH, headers=headers, json={"roleIds": [not_held.id]})
    assert refused.status_code == 403
    assert refused.json() == {"errors": [f"You cannot grant roles you do not hold: {not_held.id}"]}
    assert await stored(db, TENANT_ACCESS) == []

    created = await create(client, headers, TENANT_ACCESS, {"roleIds": [world.admin_role.id]})
    assert created["roleIds"] == [world.admin_role.id]
    assert created["createdByUserId"] == world.admin.id
    claims = await verified_claims(client, vendor, created["secret"])
    assert "userId" not in claims


async def test_vendor_naming_a_user_creates_within_that_users_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    not_held = await factory.role(tenant_id=world.tenant.id)
    headers = {**as_vendor(vendor, world), "frontegg-user-id": world.admin.id}
    refused = await client.post(PATH, headers=headers, json={"roleIds": [not_held.id]})
    assert refused.status_code == 403
    created = await create(client, headers, TENANT_ACCESS, {"roleIds": [world.admin_role.id]})
    assert created["createdByUserId"] == world.admin.id
    assert len(await stored(db, TENANT_ACCESS)) == 1


async def test_unknown_or_foreign_roles_and_any_permissions_are_400(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    foreign = await factory.role(tenant_id=world.other_tenant.id)
    permission = await factory.permission()
    for body in (
        {"roleIds": ["no-such-role"]},
        {"roleIds": [foreign.id]},
        {"permissionIds": [permission.id]},
        {"metadata": {}},
    ):
        response = await client.post(PATH, headers=as_vendor(vendor, world), json=body)
        assert response.status_code == 400, body
    assert await stored(db, TENANT_ACCESS) == []


async def test_end_user_sees_every_tenant_access_token_of_its_tenant_only(
    client: httpx.AsyncClient, vendor: dict[str, str], end_user: Any, factory: Factory
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, TENANT_ACCESS)
    by_vendor = await create(client, as_vendor(vendor, world), TENANT_ACCESS)
    by_colleague = await create(
        client, end_user(world.colleague.id, world.tenant.id), TENANT_ACCESS
    )
    await create(client, end_user(world.stranger.id, world.other_tenant.id), TENANT_ACCESS)
    await create(
        client, vendor_acting(vendor, USER_ACCESS, world.tenant.id, world.admin.id), USER_ACCESS
    )

    listed = await listed_ids(client, end_user(world.admin.id, world.tenant.id), TENANT_ACCESS)
    assert listed == [by_vendor["id"], by_colleague["id"]]
