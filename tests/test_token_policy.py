"""The account token policy (README, "Account token policy"): who sets it, what it refuses (400
naming the rule), what tightening reports, and the cap on tokens under concurrent creations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain import policy
from domain.models import AccessToken, AuditEvent, ClientCredential, Permission, TokenPolicy
from tests.factories import Factory, build_world
from tests.steps import (
    TENANT_ACCESS,
    TENANT_API_V2,
    USER_ACCESS,
    api_key,
    configure,
    create_access_token,
    validate,
)
from tests.suite import both_backends, serve_only

pytestmark = both_backends  # the same behaviour on serve and dev

POLICY = "/identity/resources/tenants/token-policy/v1"
PERMISSIONS = "/identity/resources/permissions/v1"
NO_LIMITS = {
    "userApiToken": None,
    "tenantApiToken": None,
    "userAccessToken": None,
    "tenantAccessToken": None,
}


def in_tenant(vendor: dict[str, str], tenant_id: str, user_id: str | None = None) -> dict[str, str]:
    headers = {**vendor, "frontegg-tenant-id": tenant_id}
    if user_id is not None:
        headers["frontegg-user-id"] = user_id
    return headers


async def set_policy(
    client: httpx.AsyncClient, headers: dict[str, str], **rules: Any
) -> dict[str, Any]:
    response = await client.put(POLICY, headers=headers, json=rules)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def count(db: AsyncSession, model: Any) -> int:
    return int(await db.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


# --- expiration -------------------------------------------------------------------------------


async def test_creation_beyond_the_longest_expiration_answers_400_naming_the_rule(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    headers = in_tenant(vendor, world.tenant.id)
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    await set_policy(client, headers, maxExpiresInMinutes=60)

    too_long = await client.post(TENANT_ACCESS, headers=headers, json={"expiresInMinutes": 61})
    never = await client.post(TENANT_ACCESS, headers=headers, json={})
    within = await client.post(TENANT_ACCESS, headers=headers, json={"expiresInMinutes": 60})
    elsewhere = await client.post(
        TENANT_ACCESS, headers=in_tenant(vendor, world.other_tenant.id), json={}
    )

    for refused in (too_long, never):
        assert refused.status_code == 400
        assert "maxExpiresInMinutes" in refused.json()["errors"][0]
    assert "at most 60" in too_long.json()["errors"][0]
    assert within.status_code == 201
    assert elsewhere.status_code == 201  # another account's policy is its own
    assert await count(db, AccessToken) == 2


async def test_a_required_expiration_refuses_tokens_that_never_expire(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    await set_policy(client, in_tenant(vendor, world.tenant.id), requireExpiration=True)
    as_user = in_tenant(vendor, world.tenant.id, world.admin.id)

    never = await client.post("/identity/resources/users/api-tokens/v1", headers=as_user, json={})
    expiring = await client.post(
        "/identity/resources/users/api-tokens/v1",
        headers=as_user,
        json={"expiresInMinutes": 5_256_000},
    )

    assert never.status_code == 400
    assert never.json()["errors"] == [
        "expiresInMinutes is required: tokens must expire (account token policy: requireExpiration)"
    ]
    assert expiring.status_code == 201
    assert await count(db, ClientCredential) == 1


async def test_tightening_shortens_nothing_and_reports_what_exceeds_it(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    never = await create_access_token(client, vendor, world.tenant.id)
    a_year = await create_access_token(
        client, vendor, world.tenant.id, user_id=world.admin.id, minutes=525_600
    )
    an_hour = await create_access_token(client, vendor, world.tenant.id, minutes=60)
    stored_before = {row.id: row.expires_at for row in await db.scalars(sa.select(AccessToken))}

    answer = await set_policy(
        client,
        in_tenant(vendor, world.tenant.id),
        maxExpiresInMinutes=1440,
        maxTokens={"tenantAccessToken": 1},
    )

    exceeding = {(item["rule"], item["tokenId"]) for item in answer["exceeding"]}
    assert exceeding == {
        ("maxExpiresInMinutes", never["id"]),
        ("maxExpiresInMinutes", a_year["id"]),
        ("maxTokens.tenantAccessToken", None),
    }
    over_cap = next(item for item in answer["exceeding"] if item["tokenId"] is None)
    assert (over_cap["kind"], over_cap["count"], over_cap["userId"]) == (
        "tenantAccessToken",
        2,
        None,
    )
    personal = next(item for item in answer["exceeding"] if item["tokenId"] == a_year["id"])
    assert (personal["kind"], personal["userId"]) == ("userAccessToken", world.admin.id)
    assert answer["maxExpiresInMinutes"] == 1440
    for token in (never, a_year, an_hour):
        assert (await validate(client, api_key(token["secret"]))).status_code == 200
    db.expire_all()
    stored_after = {row.id: row.expires_at for row in await db.scalars(sa.select(AccessToken))}
    assert stored_after == stored_before
    audit = await db.scalar(
        sa.select(AuditEvent.details).where(AuditEvent.action == "token_policy.updated")
    )
    assert audit is not None
    assert (audit["maxExpiresInMinutes"], audit["exceeding"]) == (1440, 3)


# --- the most tokens of a kind ----------------------------------------------------------------


async def test_the_most_tokens_of_a_kind_counts_per_owner_and_frees_a_place_on_deletion(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await build_world(factory)
    await set_policy(client, in_tenant(vendor, world.tenant.id), maxTokens={"userAccessToken": 1})
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    admin = in_tenant(vendor, world.tenant.id, world.admin.id)
    colleague = in_tenant(vendor, world.tenant.id, world.colleague.id)

    first = await client.post(USER_ACCESS, headers=admin, json={})
    second = await client.post(USER_ACCESS, headers=admin, json={})
    colleagues = await client.post(USER_ACCESS, headers=colleague, json={})
    account_own = await client.post(
        TENANT_ACCESS, headers=in_tenant(vendor, world.tenant.id), json={}
    )
    deleted = await client.delete(f"{USER_ACCESS}/{first.json()['id']}", headers=admin)
    after_deletion = await client.post(USER_ACCESS, headers=admin, json={})

    assert first.status_code == 201
    assert second.status_code == 400
    assert second.json()["errors"] == [
        "at most 1 token(s) of kind userAccessToken may exist per user in this account"
        " (account token policy: maxTokens.userAccessToken)"
    ]
    assert colleagues.status_code == 201
    assert account_own.status_code == 201
    assert deleted.status_code == 200
    assert after_deletion.status_code == 201


@serve_only  # concurrent transactions on PostgreSQL (SQLite takes one writer at a time)
async def test_the_most_tokens_of_a_kind_holds_under_concurrent_creations(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    headers = in_tenant(vendor, world.tenant.id)
    await set_policy(client, headers, maxTokens={"tenantApiToken": 3})
    body = {"roleIds": [world.admin_role.id]}

    answers = await asyncio.gather(
        *(client.post(TENANT_API_V2, headers=headers, json=body) for _ in range(10))
    )

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * 3 + [400] * 7
    assert await count(db, ClientCredential) == 3


# --- who sets and reads it --------------------------------------------------------------------


async def test_an_account_admin_with_the_new_permission_sets_its_own_accounts_policy_only(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    policy_admin = await factory.role(
        "policy-admin",
        tenant_id=world.tenant.id,
        permission_keys=["fe.secure.read.tokenPolicy", "fe.secure.write.tokenPolicy"],
    )
    nobody_role = await factory.role("nobody", tenant_id=world.tenant.id, permission_keys=[])
    admin = await factory.user(world.tenant.id, roles=[policy_admin])
    nobody = await factory.user(world.tenant.id, roles=[nobody_role])
    # The admin names the other tenant: an end user acts only within its own account.
    as_admin = {
        **end_user(admin.id, world.tenant.id),
        "frontegg-tenant-id": world.other_tenant.id,
    }

    set_by_admin = await client.put(POLICY, headers=as_admin, json={"maxExpiresInMinutes": 90})
    read_by_token_writer = await client.get(
        POLICY, headers=end_user(world.admin.id, world.tenant.id)
    )
    set_by_token_writer = await client.put(
        POLICY, headers=end_user(world.admin.id, world.tenant.id), json={}
    )
    read_by_nobody = await client.get(POLICY, headers=end_user(nobody.id, world.tenant.id))
    other_tenant = await client.get(POLICY, headers=in_tenant(vendor, world.other_tenant.id))
    vendor_without_tenant = await client.get(POLICY, headers=vendor)

    assert set_by_admin.status_code == 200, set_by_admin.text
    assert set_by_admin.json()["tenantId"] == world.tenant.id
    assert read_by_token_writer.status_code == 200
    assert read_by_token_writer.json()["maxExpiresInMinutes"] == 90
    assert set_by_token_writer.status_code == 403
    assert "fe.secure.write.tokenPolicy" in set_by_token_writer.json()["errors"][0]
    assert read_by_nobody.status_code == 403
    assert other_tenant.json() == {
        "tenantId": world.other_tenant.id,
        "maxExpiresInMinutes": None,
        "requireExpiration": False,
        "maxRotationOverlapMinutes": None,
        "maxTokens": NO_LIMITS,
        "updatedAt": None,
    }
    assert vendor_without_tenant.status_code == 400
    assert list(await db.scalars(sa.select(TokenPolicy.tenant_id))) == [world.tenant.id]


async def test_the_policy_permissions_are_seeded_and_built_in(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    listed = await client.get(PERMISSIONS, headers=vendor)
    keys = {item["key"]: item["id"] for item in listed.json()}
    write_id = keys["fe.secure.write.tokenPolicy"]

    changed = await client.patch(f"{PERMISSIONS}/{write_id}", headers=vendor, json={"key": "x"})
    deleted = await client.delete(f"{PERMISSIONS}/{write_id}", headers=vendor)

    assert "fe.secure.read.tokenPolicy" in keys
    assert changed.status_code == 403
    assert deleted.status_code == 403
    stored = await db.scalar(sa.select(Permission).where(Permission.id == write_id))
    assert stored is not None
    assert (stored.key, stored.fe_permission) == ("fe.secure.write.tokenPolicy", True)


@pytest.mark.parametrize(
    "body",
    [
        {"maxExpiresInMinutes": 0},
        {"maxExpiresInMinutes": 5_256_001},
        {"maxExpiresInMinutes": "60"},
        {"requireExpiration": "true"},
        {"maxRotationOverlapMinutes": 10_081},
        {"maxRotationOverlapMinutes": -1},
        {"maxTokens": {"userApiToken": -1}},
        {"maxTokens": {"userApiToken": 100_001}},
        {"maxTokens": {"someKind": 1}},
        {"unknown": 1},
        [],
    ],
)
async def test_a_bad_policy_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    body: Any,
) -> None:
    tenant = await factory.tenant()
    headers = in_tenant(vendor, tenant.id)
    await set_policy(client, headers, maxExpiresInMinutes=30)

    response = await client.put(POLICY, headers=headers, json=body)

    assert response.status_code == 400, response.text
    assert response.json()["errors"]
    assert (await client.get(POLICY, headers=headers)).json()["maxExpiresInMinutes"] == 30


# --- the rotation overlap, for the rotation routes -------------------------------------------


async def test_the_longest_rotation_overlap_is_the_policys_within_seven_days(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    unset = await policy.effective_policy(db, tenant.id)
    await set_policy(client, in_tenant(vendor, tenant.id), maxRotationOverlapMinutes=30)
    set_ = await policy.effective_policy(db, tenant.id)

    assert unset.longest_rotation_overlap == timedelta(days=7)
    assert set_.longest_rotation_overlap == timedelta(minutes=30)
    policy.require_rotation_overlap_allowed(set_, timedelta(minutes=30))
    with pytest.raises(policy.PolicyViolation, match="maxRotationOverlapMinutes"):
        policy.require_rotation_overlap_allowed(set_, timedelta(minutes=31))
