"""What tokens present after the directory changes under them: a role taken from their user, a
permission deleted. Access tokens follow within the cache's bound on stale roles; the next
exchange at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import utcnow
from domain.models import credential_permissions, role_permissions
from domain.validity import ENTRY_TTL_SECONDS
from tests.factories import READ, WRITE, Factory, build_scene
from tests.steps import (
    TENANT_ACCESS,
    TENANT_API_V2,
    Credential,
    api_key,
    bearer,
    configure,
    create_access_token,
    exchange_ok,
    user_credential,
    validate,
    verified_claims,
)

pytestmark = [
    pytest.mark.both_backends,  # the same behaviour on serve and dev
    # Other tests change the database behind the cache's back: start from an empty one.
    pytest.mark.usefixtures("fresh_validity_cache"),
]

VENDOR_USER_TOKENS = "/identity/resources/vendor-only/users/access-tokens/v1"
VENDOR_TENANT_TOKENS = "/identity/resources/vendor-only/tenants/access-tokens/v1"
PERMISSIONS = "/identity/resources/permissions/v1"


def past_the_staleness_bound() -> Any:
    return freeze_time(utcnow() + timedelta(seconds=ENTRY_TTL_SECONDS + 1), real_asyncio=True)


def grants_of(response: httpx.Response) -> tuple[list[str], list[str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    return sorted(body["roles"]), sorted(body["permissions"])


async def give_roles(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    user_id: str,
    role_ids: list[str],
) -> None:
    response = await client.post(
        f"/identity/resources/users/v1/{user_id}/roles",
        headers={**vendor, "frontegg-tenant-id": tenant_id},
        json={"roleIds": role_ids},
    )
    assert response.status_code == 201, response.text


async def take_roles(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    tenant_id: str,
    user_id: str,
    role_ids: list[str],
) -> None:
    response = await client.request(
        "DELETE",
        f"/identity/resources/users/v1/{user_id}/roles",
        headers={**vendor, "frontegg-tenant-id": tenant_id},
        json={"roleIds": role_ids},
    )
    assert response.status_code == 200, response.text


async def exchanged_claims(
    client: httpx.AsyncClient, vendor: dict[str, str], credential: Credential
) -> dict[str, Any]:
    pair = await exchange_ok(client, credential)
    return await verified_claims(client, vendor, pair["access_token"])


# --- a role taken from a user -----------------------------------------------------------------


async def test_a_user_access_token_stops_presenting_a_role_taken_from_its_user(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    assert grants_of(await validate(client, api_key(token["secret"]))) == (
        ["reader"],
        [READ],
    )

    await take_roles(client, vendor, scene.tenant.id, scene.user.id, [scene.reader.id])

    with past_the_staleness_bound():
        validated = await validate(client, api_key(token["secret"]))
        read_by_vendor = await client.get(f"{VENDOR_USER_TOKENS}/{token['id']}", headers=vendor)
    assert grants_of(validated) == ([], [])
    assert grants_of(read_by_vendor) == ([], [])


async def test_the_next_exchange_of_a_users_credential_leaves_out_a_role_taken_from_the_user(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    await give_roles(client, vendor, scene.tenant.id, scene.user.id, [scene.writer.id])
    await configure(client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    credential = await user_credential(client, vendor, scene.tenant.id, scene.user.id)
    before = await exchanged_claims(client, vendor, credential)
    assert sorted(before["roles"]) == ["reader", "writer"]

    await take_roles(client, vendor, scene.tenant.id, scene.user.id, [scene.writer.id])

    after = await exchanged_claims(client, vendor, credential)
    assert after["roles"] == ["reader"]
    assert after["permissions"] == [READ]


async def test_tenant_tokens_a_user_created_keep_their_grants_when_the_user_loses_its_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    await give_roles(client, vendor, scene.tenant.id, scene.user.id, [scene.writer.id])
    as_user = {**vendor, "frontegg-tenant-id": scene.tenant.id, "frontegg-user-id": scene.user.id}
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    access = await client.post(TENANT_ACCESS, headers=as_user, json={"roleIds": [scene.reader.id]})
    assert access.status_code == 201, access.text
    await configure(client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    created = await client.post(TENANT_API_V2, headers=as_user, json={"roleIds": [scene.reader.id]})
    assert created.status_code == 201, created.text
    credential = Credential(
        client_id=created.json()["clientId"],
        secret=created.json()["secret"],
        tenant_id=scene.tenant.id,
    )

    await take_roles(
        client, vendor, scene.tenant.id, scene.user.id, [scene.reader.id, scene.writer.id]
    )

    with past_the_staleness_bound():
        validated = await validate(client, api_key(access.json()["secret"]))
        read_by_vendor = await client.get(
            f"{VENDOR_TENANT_TOKENS}/{access.json()['id']}", headers=vendor
        )
    assert grants_of(validated) == (["reader"], [READ])
    assert grants_of(read_by_vendor) == (["reader"], [READ])
    claims = await exchanged_claims(client, vendor, credential)
    assert (claims["roles"], claims["permissions"]) == (["reader"], [READ])


# --- a permission deleted ---------------------------------------------------------------------


async def test_a_deleted_permission_leaves_every_role_credential_and_token_that_carried_it(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    scene = await build_scene(factory)
    reports = await factory.permission("reports.read")
    role = await factory.role(
        "analyst", tenant_id=scene.tenant.id, permission_keys=["reports.read", WRITE]
    )
    await give_roles(client, vendor, scene.tenant.id, scene.user.id, [role.id])
    user_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    tenant_token = await create_access_token(client, vendor, scene.tenant.id, role_ids=[role.id])
    await configure(client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    created = await client.post(
        TENANT_API_V2,
        headers={**vendor, "frontegg-tenant-id": scene.tenant.id},
        json={"permissionIds": [reports.id]},
    )
    assert created.status_code == 201, created.text
    credential = Credential(
        client_id=created.json()["clientId"],
        secret=created.json()["secret"],
        tenant_id=scene.tenant.id,
    )
    jwt_before = (await exchange_ok(client, credential))["access_token"]
    for secret in (user_token["secret"], tenant_token["secret"]):
        assert "reports.read" in (grants_of(await validate(client, api_key(secret))))[1]

    deleted = await client.delete(f"{PERMISSIONS}/{reports.id}", headers=vendor)

    assert deleted.status_code == 204, deleted.text
    assert (
        await db.scalar(
            sa.select(sa.func.count()).where(role_permissions.c.permission_id == reports.id)
        )
    ) == 0
    assert (
        await db.scalar(
            sa.select(sa.func.count()).where(credential_permissions.c.permission_id == reports.id)
        )
    ) == 0
    with past_the_staleness_bound():
        user_validated = await validate(client, api_key(user_token["secret"]))
        tenant_validated = await validate(client, api_key(tenant_token["secret"]))
        user_read = await client.get(f"{VENDOR_USER_TOKENS}/{user_token['id']}", headers=vendor)
        tenant_read = await client.get(
            f"{VENDOR_TENANT_TOKENS}/{tenant_token['id']}", headers=vendor
        )
    assert grants_of(user_validated) == (["analyst", "reader"], sorted([READ, WRITE]))
    assert grants_of(user_read) == (["analyst", "reader"], sorted([READ, WRITE]))
    assert grants_of(tenant_validated) == (["analyst"], [WRITE])
    assert grants_of(tenant_read) == (["analyst"], [WRITE])
    claims = await exchanged_claims(client, vendor, credential)
    assert claims["permissions"] == []
    # A JWT exchanged before carries what it was exchanged with until it expires (README).
    assert (await validate(client, bearer(jwt_before))).json()["permissions"] == ["reports.read"]
