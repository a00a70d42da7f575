"""Tenant client credentials: /identity/resources/tenants/api-tokens/v2 (and v1)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent, credential_permissions, credential_roles
from tests.factories import Factory, World, build_world, stored
from tests.kinds import TENANT_API, USER_API
from tests.steps import CONFIG, assert_argon2id_hash_of, create, listed_ids, vendor_acting

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

V1 = TENANT_API.path
V2 = TENANT_API.create_path
LISTED_KEYS = {
    "clientId",
    "description",
    "tenantId",
    "createdByUserId",
    "metadata",
    "createdAt",
    "permissionIds",
    "roleIds",
    "expires",
    # Beyond Frontegg: where a rotation stands (README "Rotation").
    "rotatedAt",
    "previousSecretExpires",
    "previousSecretLastUsedAt",
    # Beyond Frontegg's fields (README "Last used").
    "lastUsedAt",
    "lastUsedFrom",
}


def as_vendor(vendor: dict[str, str], world: World) -> dict[str, str]:
    return {**vendor, "frontegg-tenant-id": world.tenant.id}


async def grants_of(db: AsyncSession, client_id: str) -> tuple[list[str], list[str]]:
    """The role ids and permission ids stored for a credential."""
    roles = await db.scalars(
        sa.select(credential_roles.c.role_id).where(credential_roles.c.client_id == client_id)
    )
    permissions = await db.scalars(
        sa.select(credential_permissions.c.permission_id).where(
            credential_permissions.c.client_id == client_id
        )
    )
    return sorted(roles), sorted(permissions)


@pytest.mark.parametrize("path", [V2, V1], ids=["v2", "deprecated-v1"])
async def test_created_tenant_api_token_has_frontegg_fields_and_only_a_hash_is_stored(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    path: str,
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    response = await client.post(
        path,
        headers=as_vendor(vendor, world),
        json={
            "description": "billing sync",
            "metadata": {"env": "prod"},
            "roleIds": [role.id],
            "expiresInMinutes": 1440,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {*LISTED_KEYS, "secret"}
    assert uuid.UUID(created["clientId"]).version == 4
    assert created["tenantId"] == world.tenant.id
    assert created["createdByUserId"] is None
    assert created["roleIds"] == [role.id]
    assert created["permissionIds"] == []
    assert created["metadata"] == {"env": "prod"}
    assert created["expires"].endswith("Z")

    [row] = await stored(db, TENANT_API)
    assert row.tenant_id == world.tenant.id
    assert row.user_id is None
    assert row.created_by_user_id is None
    assert row.description == "billing sync"
    assert_argon2id_hash_of(row.secret_hash, created["secret"])
    assert await grants_of(db, row.client_id) == ([role.id], [])

    listed = (await client.get(V1, headers=as_vendor(vendor, world))).json()
    assert listed == [{key: value for key, value in created.items() if key != "secret"}]


async def test_role_ids_override_permission_ids(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    permission = await factory.permission()
    created = await create(
        client,
        as_vendor(vendor, world),
        TENANT_API,
        {"roleIds": [role.id], "permissionIds": [permission.id]},
    )
    assert created["roleIds"] == [role.id]
    assert created["permissionIds"] == []
    assert await grants_of(db, created["clientId"]) == ([role.id], [])


async def test_tenant_api_token_may_carry_permissions_alone(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    first, second = await factory.permission(), await factory.permission()
    created = await create(
        client,
        as_vendor(vendor, world),
        TENANT_API,
        {"roleIds": [], "permissionIds": [first.id, second.id]},
    )
    assert created["roleIds"] == []
    assert created["permissionIds"] == sorted([first.id, second.id])
    assert await grants_of(db, created["clientId"]) == ([], sorted([first.id, second.id]))


async def test_environment_wide_role_may_be_given(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    shared = await factory.role()
    created = await create(client, as_vendor(vendor, world), TENANT_API, {"roleIds": [shared.id]})
    assert created["roleIds"] == [shared.id]


@pytest.mark.parametrize(
    "body",
    [{}, {"roleIds": [], "permissionIds": []}, {"roleIds": None}, {"permissionIds": "p"}],
    ids=["nothing", "empty-lists", "null-roles", "string-permissions"],
)
async def test_tenant_api_token_without_roles_or_permissions_is_400(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    body: dict[str, Any],
) -> None:
    world = await build_world(factory)
    response = await client.post(V2, headers=as_vendor(vendor, world), json=body)
    assert response.status_code == 400, response.text
    assert await stored(db, TENANT_API) == []


async def test_unknown_or_foreign_roles_and_unknown_permissions_are_400(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    foreign = await factory.role(tenant_id=world.other_tenant.id)
    for body, error in (
        ({"roleIds": ["no-such-role"]}, "Unknown role ids: no-such-role"),
        ({"roleIds": [foreign.id]}, f"Unknown role ids: {foreign.id}"),
        ({"permissionIds": ["no-such-permission"]}, "Unknown permission ids: no-such-permission"),
    ):
        response = await client.post(V2, headers=as_vendor(vendor, world), json=body)
        assert response.status_code == 400, body
        assert response.json() == {"errors": [error]}
    assert await stored(db, TENANT_API) == []


async def test_end_user_cannot_give_a_role_it_does_not_hold_but_can_one_it_holds(
    client: httpx.AsyncClient, end_user: Any, factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    held = await factory.role(tenant_id=world.tenant.id)
    not_held = await factory.role(tenant_id=world.tenant.id)
    user = await factory.user(world.tenant.id, roles=[world.admin_role, held])
    headers = end_user(user.id, world.tenant.id)

    refused = await client.post(V2, headers=headers, json={"roleIds": [held.id, not_held.id]})
    assert refused.status_code == 403
    assert refused.json() == {"errors": [f"You cannot grant roles you do not hold: {not_held.id}"]}
    assert await stored(db, TENANT_API) == []

    created = await create(client, headers, TENANT_API, {"roleIds": [held.id]})
    assert created["roleIds"] == [held.id]
    assert created["createdByUserId"] == user.id


async def test_end_user_cannot_give_a_permission_it_does_not_hold(
    client: httpx.AsyncClient, end_user: Any, factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    permission = await factory.permission()
    response = await client.post(
        V2,
        headers=end_user(world.admin.id, world.tenant.id),
        json={"permissionIds": [permission.id]},
    )
    assert response.status_code == 403
    assert await stored(db, TENANT_API) == []


async def test_vendor_naming_a_user_creates_as_that_user_and_within_its_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    not_held = await factory.role(tenant_id=world.tenant.id)
    headers = {**as_vendor(vendor, world), "frontegg-user-id": world.admin.id}

    refused = await client.post(V2, headers=headers, json={"roleIds": [not_held.id]})
    assert refused.status_code == 403
    assert await stored(db, TENANT_API) == []

    created = await create(client, headers, TENANT_API, {"roleIds": [world.admin_role.id]})
    assert created["createdByUserId"] == world.admin.id
    [row] = await stored(db, TENANT_API)
    assert row.created_by_user_id == world.admin.id
    assert row.user_id is None


async def test_vendor_alone_may_give_any_role_of_the_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    nobody_holds = await factory.role(tenant_id=world.tenant.id)
    created = await create(
        client, as_vendor(vendor, world), TENANT_API, {"roleIds": [nobody_holds.id]}
    )
    assert created["roleIds"] == [nobody_holds.id]
    assert created["createdByUserId"] is None


async def test_end_user_sees_every_tenant_api_token_of_its_tenant_only(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
) -> None:
    world = await build_world(factory)
    by_vendor = await create(client, as_vendor(vendor, world), TENANT_API)
    by_colleague = await create(client, end_user(world.colleague.id, world.tenant.id), TENANT_API)
    await create(client, end_user(world.stranger.id, world.other_tenant.id), TENANT_API)
    # A user's own credential is not a tenant credential.
    await create(client, end_user(world.admin.id, world.tenant.id), USER_API)

    listed = await listed_ids(client, end_user(world.admin.id, world.tenant.id), TENANT_API)
    assert listed == [by_vendor["clientId"], by_colleague["clientId"]]


# --- PATCH -----------------------------------------------------------------------------------


async def test_patch_changes_description_and_metadata_and_keeps_grants(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    created = await create(
        client,
        as_vendor(vendor, world),
        TENANT_API,
        {"description": "old", "metadata": {"a": 1}, "roleIds": [role.id]},
    )
    response = await client.patch(
        f"{V1}/{created['clientId']}",
        headers=as_vendor(vendor, world),
        json={"description": "new", "metadata": {"b": 2}},
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert set(updated) == LISTED_KEYS
    assert updated["description"] == "new"
    assert updated["metadata"] == {"b": 2}
    assert updated["roleIds"] == [role.id]
    assert updated["createdAt"] == created["createdAt"]
    [row] = await stored(db, TENANT_API)
    assert (row.description, row.metadata_json) == ("new", {"b": 2})
    assert row.updated_at > row.created_at
    actions = list(await db.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions[-2:] == ["token.created", "token.updated"]


async def test_patch_role_ids_replace_roles_and_clear_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    created = await create(client, as_vendor(vendor, world), TENANT_API)
    response = await client.patch(
        f"{V1}/{created['clientId']}",
        headers=as_vendor(vendor, world),
        json={"roleIds": [role.id]},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["roleIds"], response.json()["permissionIds"]) == ([role.id], [])
    assert await grants_of(db, created["clientId"]) == ([role.id], [])


async def test_patch_permission_ids_replace_permissions_and_clear_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    permission = await factory.permission()
    created = await create(client, as_vendor(vendor, world), TENANT_API, {"roleIds": [role.id]})
    response = await client.patch(
        f"{V1}/{created['clientId']}",
        headers=as_vendor(vendor, world),
        json={"permissionIds": [permission.id]},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["roleIds"], response.json()["permissionIds"]) == ([], [permission.id])
    assert await grants_of(db, created["clientId"]) == ([], [permission.id])


async def test_patch_with_both_lists_lets_role_ids_win(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    role = await factory.role(tenant_id=world.tenant.id)
    permission = await factory.permission()
    created = await create(client, as_vendor(vendor, world), TENANT_API)
    response = await client.patch(
        f"{V1}/{created['clientId']}",
        headers=as_vendor(vendor, world),
        json={"roleIds": [role.id], "permissionIds": [permission.id]},
    )
    assert response.status_code == 200, response.text
    assert await grants_of(db, created["clientId"]) == ([role.id], [])


async def test_patch_cannot_empty_a_token(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    created = await create(client, as_vendor(vendor, world), TENANT_API)
    before = await grants_of(db, created["clientId"])
    for body in ({"roleIds": []}, {"permissionIds": []}, {"roleIds": [], "permissionIds": []}):
        response = await client.patch(
            f"{V1}/{created['clientId']}", headers=as_vendor(vendor, world), json=body
        )
        assert response.status_code == 400, body
    assert await grants_of(db, created["clientId"]) == before
    assert before[1]


async def test_end_user_cannot_patch_in_a_role_it_does_not_hold(
    client: httpx.AsyncClient, end_user: Any, factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    not_held = await factory.role(tenant_id=world.tenant.id)
    headers = end_user(world.admin.id, world.tenant.id)
    created = await create(client, headers, TENANT_API, {"roleIds": [world.admin_role.id]})

    response = await client.patch(
        f"{V1}/{created['clientId']}", headers=headers, json={"roleIds": [not_held.id]}
    )
    assert response.status_code == 403
    assert await grants_of(db, created["clientId"]) == ([world.admin_role.id], [])

    allowed = await client.patch(
        f"{V1}/{created['clientId']}", headers=headers, json={"description": "still mine"}
    )
    assert allowed.status_code == 200


async def test_end_user_without_write_permission_cannot_patch(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    created = await create(client, as_vendor(vendor, world), TENANT_API, {"description": "kept"})
    reader_role = await factory.role(
        tenant_id=world.tenant.id, permission_keys=["fe.secure.read.tenantApiTokens"]
    )
    reader = await factory.user(world.tenant.id, roles=[reader_role])
    response = await client.patch(
        f"{V1}/{created['clientId']}",
        headers=end_user(reader.id, world.tenant.id),
        json={"description": "changed"},
    )
    assert response.status_code == 403
    assert response.json() == {"errors": ["Missing permission fe.secure.write.tenantApiTokens"]}
    [row] = await stored(db, TENANT_API)
    assert row.description == "kept"


async def test_patch_of_unknown_foreign_or_user_token_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    foreign = await create(
        client, {**vendor, "frontegg-tenant-id": world.other_tenant.id}, TENANT_API
    )
    personal = await create(
        client, vendor_acting(vendor, USER_API, world.tenant.id, world.admin.id), USER_API
    )
    for client_id in ("no-such-token", foreign["clientId"], personal["clientId"]):
        response = await client.patch(
            f"{V1}/{client_id}", headers=as_vendor(vendor, world), json={"description": "x"}
        )
        assert response.status_code == 404, client_id
        assert response.json() == {"errors": [f"Api token {client_id} not found"]}
    descriptions = {row.description for row in await stored(db, TENANT_API)}
    assert descriptions == {None}


@pytest.mark.parametrize(
    "body",
    [
        {"secret": "mine"},
        {"tenantId": "t"},
        {"createdByUserId": "u"},
        {"expiresInMinutes": 5},
        {"description": "nul\x00"},
        {"description": "x" * 10_000},
        {"description": None},
    ],
    ids=["secret", "tenantId", "createdByUserId", "expiry", "nul", "long", "null"],
)
async def test_bad_patch_is_400_and_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    body: dict[str, Any],
) -> None:
    world = await build_world(factory)
    created = await create(client, as_vendor(vendor, world), TENANT_API, {"description": "kept"})
    response = await client.patch(
        f"{V1}/{created['clientId']}", headers=as_vendor(vendor, world), json=body
    )
    assert response.status_code == 400, response.text
    [row] = await stored(db, TENANT_API)
    assert row.description == "kept"
    assert row.updated_at == row.created_at


async def test_patch_still_works_while_m2m_is_disabled(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    created = await create(client, as_vendor(vendor, world), TENANT_API)
    off = await client.post(CONFIG, headers=vendor, json={"apiTokensEnabled": False})
    assert off.status_code == 201
    response = await client.patch(
        f"{V1}/{created['clientId']}", headers=as_vendor(vendor, world), json={"description": "d"}
    )
    assert response.status_code == 200
    assert response.json()["description"] == "d"
