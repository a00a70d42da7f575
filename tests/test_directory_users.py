"""Directory: the user routes (create, read, delete, assign roles)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.models import AuditEvent, Role, User, role_permissions, user_roles
from tests.factories import Factory
from tests.steps import finish_jobs

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

USERS_V2 = "/identity/resources/users/v2"
USERS = "/identity/resources/users/v1"
CREATED_FIELDS = {
    "id",
    "email",
    "name",
    "verified",
    "roles",
    "permissions",
    "metadata",
    "createdAt",
    "tenantId",
    "activatedForTenant",
}
ROLE_FIELDS = {
    "id",
    "vendorId",
    "tenantId",
    "key",
    "name",
    "description",
    "isDefault",
    "firstUserRole",
    "level",
    "createdAt",
    "updatedAt",
    "permissions",
}
PERMISSION_FIELDS = {
    "id",
    "key",
    "name",
    "description",
    "createdAt",
    "updatedAt",
    "roleIds",
    "categoryId",
    "fePermission",
}
IROLE_FIELDS = {"id", "key", "name", "description", "isDefault", "level", "createdAt"}


def in_tenant(vendor: dict[str, str], tenant_id: str) -> dict[str, str]:
    return {**vendor, "frontegg-tenant-id": tenant_id}


async def roles_of(db: AsyncSession, user_id: str) -> set[tuple[str, str]]:
    rows = await db.execute(
        sa.select(user_roles.c.tenant_id, Role.key)
        .join(Role, Role.id == user_roles.c.role_id)
        .where(user_roles.c.user_id == user_id)
    )
    return {(tenant_id, key) for tenant_id, key in rows}


async def audit_actions(db: AsyncSession) -> list[tuple[str, str, str | None]]:
    events = await db.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
    return [(e.action, e.target_id, e.tenant_id) for e in events]


# --- create -----------------------------------------------------------------------------------


async def test_creating_a_user_with_roles_stores_it_with_those_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    reader = await factory.role("reader", permission_keys=["fe.secure.read.userApiTokens"])
    writer = await factory.role(
        "writer", tenant_id="acme", permission_keys=["fe.secure.write.userApiTokens"]
    )
    await factory.role("ignored-default")  # roleIds given: defaults do not apply

    response = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={
            "email": "ada@example.com",
            "name": "Ada",
            "roleIds": [reader.id, writer.id],
            "metadata": '{"plan": "gold"}',
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CREATED_FIELDS
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert body["verified"] is False
    assert body["activatedForTenant"] is True
    assert body["tenantId"] == "acme"
    assert body["metadata"] == '{"plan": "gold"}'
    assert sorted(body["roles"]) == ["reader", "writer"]
    assert sorted(body["permissions"]) == [
        "fe.secure.read.userApiTokens",
        "fe.secure.write.userApiTokens",
    ]
    user = await db.get(User, body["id"])
    assert user is not None
    assert (user.tenant_id, user.email, user.name) == ("acme", "ada@example.com", "Ada")
    assert json.loads(user.metadata_json) == {"plan": "gold"}
    assert await roles_of(db, user.id) == {("acme", "reader"), ("acme", "writer")}
    assert await audit_actions(db) == [("user.created", user.id, "acme")]


async def test_a_user_created_with_an_id_keeps_it_so_it_can_match_the_idp_sub(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")

    response = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={"email": "ada@example.com", "id": "idp|ada"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["id"] == "idp|ada"
    assert response.json()["metadata"] == "{}"
    user = await db.get(User, "idp|ada")
    assert user is not None
    assert user.metadata_json == "{}"


async def test_a_user_created_without_roles_gets_the_default_roles_and_first_user_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    env_default = await factory.role("member")
    tenant_default = await factory.role("acme-member", tenant_id="acme")
    other_default = await factory.role("other-member", tenant_id="other")
    env_first = await factory.role("owner")
    tenant_first = await factory.role("acme-owner", tenant_id="acme")
    await factory.role("plain")
    async with factory._sessions() as session:
        await session.execute(
            sa.update(Role)
            .where(Role.id.in_([env_default.id, tenant_default.id, other_default.id]))
            .values(is_default=True)
        )
        await session.execute(
            sa.update(Role)
            .where(Role.id.in_([env_first.id, tenant_first.id]))
            .values(first_user_role=True)
        )
        await session.commit()

    first = await client.post(
        USERS_V2, headers=in_tenant(vendor, "acme"), json={"email": "first@example.com"}
    )
    second = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={"email": "second@example.com", "roleIds": []},
    )

    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert sorted(first.json()["roles"]) == ["acme-member", "acme-owner", "member", "owner"]
    assert sorted(second.json()["roles"]) == ["acme-member", "member"]
    assert await roles_of(db, first.json()["id"]) == {
        ("acme", "acme-member"),
        ("acme", "acme-owner"),
        ("acme", "member"),
        ("acme", "owner"),
    }
    assert await roles_of(db, second.json()["id"]) == {("acme", "acme-member"), ("acme", "member")}


async def test_emails_are_stored_in_lower_case_so_case_variants_clash(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")

    created = await client.post(
        USERS_V2, headers=in_tenant(vendor, "acme"), json={"email": "Ada@Example.COM"}
    )
    again = await client.post(
        USERS_V2, headers=in_tenant(vendor, "acme"), json={"email": "ada@example.com"}
    )

    assert created.status_code == 201
    assert created.json()["email"] == "ada@example.com"
    assert again.status_code == 409
    assert again.json() == {"errors": ["A user with this email already exists"]}
    assert list(await db.scalars(sa.select(User.email))) == ["ada@example.com"]


async def test_frontegg_create_user_fields_are_accepted_and_ignored(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")

    response = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={
            "email": "ada@example.com",
            "metadata": "{}",
            "username": "ada",
            "profilePictureUrl": "https://example.com/ada.png",
            "phoneNumber": "+15550100",
            "provider": "local",
            "skipInviteEmail": True,
            "emailMetadata": {"greeting": "hi"},
        },
    )

    assert response.status_code == 201, response.text
    assert set(response.json()) == CREATED_FIELDS
    assert await db.get(User, response.json()["id"]) is not None


async def test_a_password_is_refused_because_no_password_is_kept(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")

    response = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={"email": "ada@example.com", "password": "hunter2"},
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        "`password` is not accepted: this service keeps no passwords"
    ]
    assert "hunter2" not in response.text
    assert list(await db.scalars(sa.select(User))) == []


async def test_bad_user_bodies_are_refused_and_create_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    bad_bodies: list[Any] = [
        {},
        {"email": "not-an-email"},
        {"email": "a b@example.com"},
        {"email": 42},
        {"email": "a" * 10_000 + "@example.com"},
        {"email": "ada@example.com\x00"},
        {"email": "ada@example.com", "name": "x" * 10_000},
        {"email": "ada@example.com", "tenantId": "acme"},
        {"email": "ada@example.com", "metadata": {"plan": "gold"}},
        {"email": "ada@example.com", "roleIds": "r1"},
        {"email": "ada@example.com", "provider": "myspace"},
        {"email": "ada@example.com", "expirationInSeconds": 600},
        {"email": "ada@example.com", "emailMetadata": {"big": "x" * 9000}},
        [{"email": "ada@example.com"}],
    ]
    for body in bad_bodies:
        response = await client.post(USERS_V2, headers=in_tenant(vendor, "acme"), json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["errors"], body
    assert list(await db.scalars(sa.select(User))) == []
    assert await audit_actions(db) == []


async def test_metadata_must_be_a_stringified_json_object(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    # Nested deeper than Python's parser recurses, yet within the length bound.
    deep = '{"a": ' + "[" * 4000 + "]" * 4000 + "}"
    for metadata in ["", "nope", "[]", "1", '"{}"', "null", '{"a": NaN}', deep]:
        response = await client.post(
            USERS_V2,
            headers=in_tenant(vendor, "acme"),
            json={"email": "ada@example.com", "metadata": metadata},
        )
        assert response.status_code == 400, (metadata[:20], response.text)
        assert response.json() == {"errors": ["metadata must be a stringified JSON object"]}
    too_big = await client.post(
        USERS_V2,
        headers=in_tenant(vendor, "acme"),
        json={"email": "ada@example.com", "metadata": json.dumps({"a": "x" * 10_000})},
    )
    assert too_big.status_code == 400
    assert list(await db.scalars(sa.select(User))) == []


async def test_creating_a_user_needs_a_known_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    missing = await client.post(USERS_V2, headers=vendor, json={"email": "ada@example.com"})
    unknown = await client.post(
        USERS_V2, headers=in_tenant(vendor, "nope"), json={"email": "ada@example.com"}
    )

    assert missing.status_code == 400
    assert missing.json()["errors"]
    assert unknown.status_code == 404
    assert unknown.json() == {"errors": ["Tenant nope not found"]}
    assert list(await db.scalars(sa.select(User))) == []


async def test_roles_of_another_tenant_or_unknown_roles_are_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    foreign = await factory.role("foreign", tenant_id="other")
    mine = await factory.role("mine", tenant_id="acme")

    for role_ids in ([foreign.id], [mine.id, "no-such-role"]):
        response = await client.post(
            USERS_V2,
            headers=in_tenant(vendor, "acme"),
            json={"email": "ada@example.com", "roleIds": role_ids},
        )
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0].startswith("Unknown role ids: ")
    assert list(await db.scalars(sa.select(User))) == []
    assert list(await db.execute(sa.select(user_roles))) == []


async def test_a_taken_email_or_id_is_a_conflict_and_creates_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    await factory.user("other", user_id="u-1", email="ada@example.com")

    same_email = await client.post(
        USERS_V2, headers=in_tenant(vendor, "acme"), json={"email": "ada@example.com"}
    )
    same_id = await client.post(
        USERS_V2, headers=in_tenant(vendor, "acme"), json={"email": "bob@example.com", "id": "u-1"}
    )

    assert same_email.status_code == 409
    assert same_email.json() == {"errors": ["A user with this email already exists"]}
    assert same_id.status_code == 409
    assert same_id.json() == {"errors": ["A user with this id already exists"]}
    users = list(await db.scalars(sa.select(User)))
    assert [(u.id, u.tenant_id) for u in users] == [("u-1", "other")]
    assert await audit_actions(db) == []


# --- read -------------------------------------------------------------------------------------


async def test_getting_a_user_returns_the_frontegg_user_dto(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role(
        "reader",
        tenant_id="acme",
        permission_keys=["fe.secure.read.userApiTokens", "fe.secure.read.tenantApiTokens"],
    )
    other_role = await factory.role("auditor", permission_keys=["fe.secure.read.userApiTokens"])
    user = await factory.user("acme", user_id="u-1", email="ada@example.com", roles=[role])

    response = await client.get(f"{USERS}/u-1", headers=vendor)

    assert response.status_code == 200, response.text
    body = response.json()
    assert {
        "id",
        "email",
        "name",
        "sub",
        "tenantId",
        "tenantIds",
        "verified",
        "mfaEnrolled",
        "provider",
        "roles",
        "permissions",
        "tenants",
        "metadata",
        "createdAt",
        "lastLogin",
        "profilePictureUrl",
        "vendorMetadata",
        "subAccountAccessAllowed",
    } <= set(body)
    assert body["id"] == body["sub"] == user.id
    assert body["email"] == "ada@example.com"
    assert body["tenantId"] == "acme"
    assert body["tenantIds"] == ["acme"]
    assert body["verified"] is False
    assert body["mfaEnrolled"] is False
    assert body["provider"] == "local"
    assert body["metadata"] == "{}"
    assert body["lastLogin"] is None
    assert body["profilePictureUrl"] is None
    assert body["vendorMetadata"] is None
    assert body["subAccountAccessAllowed"] is False
    [role_body] = body["roles"]
    assert set(role_body) == ROLE_FIELDS
    assert (role_body["id"], role_body["key"], role_body["tenantId"]) == (role.id, "reader", "acme")
    permission_ids = await factory.permission_ids(
        ["fe.secure.read.userApiTokens", "fe.secure.read.tenantApiTokens"]
    )
    assert sorted(role_body["permissions"]) == sorted(permission_ids)
    assert all(set(p) == PERMISSION_FIELDS for p in body["permissions"])
    by_key = {p["key"]: p for p in body["permissions"]}
    assert set(by_key) == {"fe.secure.read.userApiTokens", "fe.secure.read.tenantApiTokens"}
    assert sorted(by_key["fe.secure.read.userApiTokens"]["roleIds"]) == sorted(
        [role.id, other_role.id]
    )
    assert by_key["fe.secure.read.tenantApiTokens"]["fePermission"] is True
    assert body["tenants"] == [{"tenantId": "acme", "roles": body["roles"]}]


async def test_getting_a_user_scoped_to_another_tenant_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    await factory.user("acme", user_id="u-1")

    scoped_right = await client.get(f"{USERS}/u-1", headers=in_tenant(vendor, "acme"))
    scoped_wrong = await client.get(f"{USERS}/u-1", headers=in_tenant(vendor, "other"))
    unknown = await client.get(f"{USERS}/nope", headers=vendor)

    assert scoped_right.status_code == 200
    assert scoped_wrong.status_code == 404
    assert scoped_wrong.json() == {"errors": ["User u-1 not found"]}
    assert unknown.status_code == 404
    assert unknown.json() == {"errors": ["User nope not found"]}


# --- delete -----------------------------------------------------------------------------------


async def test_deleting_a_user_answers_200_with_an_empty_body_and_is_audited(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    services: Services,
) -> None:
    await factory.tenant("acme")
    role = await factory.role("reader")
    await factory.user("acme", user_id="u-1", roles=[role])
    await factory.user("acme", user_id="u-2", roles=[role])

    response = await client.delete(f"{USERS}/u-1", headers=in_tenant(vendor, "acme"))
    gone_at_once = await client.get(f"{USERS}/u-1", headers=vendor)
    await finish_jobs(services)

    assert response.status_code == 200
    assert response.content == b""
    assert gone_at_once.status_code == 404
    assert list(await db.scalars(sa.select(User.id))) == ["u-2"]
    assert await roles_of(db, "u-1") == set()
    assert await roles_of(db, "u-2") == {("acme", "reader")}
    assert await audit_actions(db) == [("user.deleted", "u-1", "acme")]


async def test_deleting_a_user_of_another_tenant_or_an_unknown_user_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    await factory.user("acme", user_id="u-1")

    wrong_tenant = await client.delete(f"{USERS}/u-1", headers=in_tenant(vendor, "other"))
    unknown = await client.delete(f"{USERS}/nope", headers=vendor)

    assert wrong_tenant.status_code == 404
    assert wrong_tenant.json() == {"errors": ["User u-1 not found"]}
    assert unknown.status_code == 404
    assert await db.get(User, "u-1") is not None
    assert await audit_actions(db) == []


# --- assign roles -----------------------------------------------------------------------------


async def test_assigning_roles_adds_them_and_answers_with_every_role_held(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    held = await factory.role("reader")
    writer = await factory.role("writer", tenant_id="acme")
    await factory.user("acme", user_id="u-1", roles=[held])

    response = await client.post(
        f"{USERS}/u-1/roles", headers=in_tenant(vendor, "acme"), json={"roleIds": [writer.id]}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"tenantId", "userId", "roles"}
    assert (body["tenantId"], body["userId"]) == ("acme", "u-1")
    assert all(set(role) == IROLE_FIELDS for role in body["roles"])
    assert sorted(role["key"] for role in body["roles"]) == ["reader", "writer"]
    assert await roles_of(db, "u-1") == {("acme", "reader"), ("acme", "writer")}
    assert await audit_actions(db) == [("user.roles_assigned", "u-1", "acme")]


async def test_assigning_a_role_already_held_is_a_no_op(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    held = await factory.role("reader")
    await factory.user("acme", user_id="u-1", roles=[held])

    response = await client.post(
        f"{USERS}/u-1/roles", headers=in_tenant(vendor, "acme"), json={"roleIds": [held.id]}
    )

    assert response.status_code == 201, response.text
    assert [role["id"] for role in response.json()["roles"]] == [held.id]
    rows = list(await db.execute(sa.select(user_roles).where(user_roles.c.user_id == "u-1")))
    assert len(rows) == 1
    assert await audit_actions(db) == []


async def test_assigning_unknown_or_foreign_roles_is_refused_and_adds_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    mine = await factory.role("mine", tenant_id="acme")
    foreign = await factory.role("foreign", tenant_id="other")
    await factory.user("acme", user_id="u-1")

    for role_ids in ([foreign.id], [mine.id, "nope"]):
        response = await client.post(
            f"{USERS}/u-1/roles", headers=in_tenant(vendor, "acme"), json={"roleIds": role_ids}
        )
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0].startswith("Unknown role ids: ")
    assert await roles_of(db, "u-1") == set()
    assert await audit_actions(db) == []


async def test_assigning_roles_needs_the_users_own_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    role = await factory.role("reader")
    await factory.user("acme", user_id="u-1")
    body = {"roleIds": [role.id]}

    wrong_tenant = await client.post(
        f"{USERS}/u-1/roles", headers=in_tenant(vendor, "other"), json=body
    )
    unknown_tenant = await client.post(
        f"{USERS}/u-1/roles", headers=in_tenant(vendor, "nope"), json=body
    )
    unknown_user = await client.post(
        f"{USERS}/nope/roles", headers=in_tenant(vendor, "acme"), json=body
    )
    no_tenant = await client.post(f"{USERS}/u-1/roles", headers=vendor, json=body)

    assert wrong_tenant.status_code == 404
    assert wrong_tenant.json() == {"errors": ["User u-1 not found"]}
    assert unknown_tenant.status_code == 404
    assert unknown_tenant.json() == {"errors": ["Tenant nope not found"]}
    assert unknown_user.status_code == 404
    assert no_tenant.status_code == 400
    assert await roles_of(db, "u-1") == set()


async def test_bad_role_assignment_bodies_are_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.user("acme", user_id="u-1")
    for body in (
        {},
        {"roleIds": []},
        {"roleIds": "r"},
        {"roleIds": ["x" * 10_000]},
        {"roleIds": ["a\x00"]},
        {"roleIds": ["r"], "tenantId": "acme"},
    ):
        response = await client.post(
            f"{USERS}/u-1/roles", headers=in_tenant(vendor, "acme"), json=body
        )
        assert response.status_code == 400, (body, response.text)
        assert response.json()["errors"]
    assert await roles_of(db, "u-1") == set()


async def test_a_users_permissions_follow_role_permission_changes(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role("reader")
    await factory.user("acme", user_id="u-1", roles=[role])
    [permission_id] = await factory.permission_ids(["fe.secure.read.userApiTokens"])
    async with factory._sessions() as session:
        await session.execute(
            sa.insert(role_permissions).values(role_id=role.id, permission_id=permission_id)
        )
        await session.commit()

    response = await client.get(f"{USERS}/u-1", headers=vendor)

    assert [p["key"] for p in response.json()["permissions"]] == ["fe.secure.read.userApiTokens"]


# --- update -----------------------------------------------------------------------------------


async def test_updating_a_user_changes_its_name_and_metadata_and_answers_the_user(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id, name="Before")

    response = await client.put(
        f"{USERS}/{user.id}",
        headers=vendor,
        json={"name": "After", "metadata": '{"team": "ops"}', "phoneNumber": "+15551234567"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["name"], body["metadata"]) == (user.id, "After", '{"team": "ops"}')
    assert body["tenantId"] == tenant.id
    stored = await db.get(User, user.id)
    assert stored is not None
    assert (stored.name, stored.metadata_json, stored.email) == (
        "After",
        '{"team": "ops"}',
        user.email,
    )


async def test_updating_a_users_email_to_another_users_is_a_conflict(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    other = await factory.user(tenant.id, email="taken@example.test")

    clash = await client.put(
        f"{USERS}/{user.id}", headers=vendor, json={"email": "TAKEN@example.test"}
    )
    moved = await client.put(
        f"{USERS}/{other.id}", headers=vendor, json={"email": "New@Example.test"}
    )

    assert clash.status_code == 409, clash.text
    assert clash.json()["errors"] == ["A user with this email already exists"]
    assert moved.status_code == 200, moved.text
    assert moved.json()["email"] == "new@example.test"
    stored = await db.get(User, user.id)
    assert stored is not None
    assert stored.email == user.email


@pytest.mark.parametrize(
    "body",
    [{"metadata": "[1]"}, {"password": "x"}, {"name": 7}],
    ids=["metadata-not-an-object", "unknown-field", "name-not-a-string"],
)
async def test_updating_a_user_with_a_bad_body_changes_nothing(
    body: dict[str, Any],
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id, name="Kept")

    response = await client.put(f"{USERS}/{user.id}", headers=vendor, json=body)

    assert response.status_code in (400, 422), response.text
    stored = await db.get(User, user.id)
    assert stored is not None
    assert (stored.name, stored.metadata_json) == ("Kept", "{}")


async def test_updating_another_tenants_user_or_an_unknown_one_is_not_found(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    other_tenant = await factory.tenant(name="Other")
    user = await factory.user(tenant.id)

    foreign = await client.put(
        f"{USERS}/{user.id}", headers=in_tenant(vendor, other_tenant.id), json={"name": "X"}
    )
    unknown = await client.put(f"{USERS}/nobody", headers=vendor, json={"name": "X"})

    assert (foreign.status_code, unknown.status_code) == (404, 404)


# --- unassign roles ---------------------------------------------------------------------------


async def test_taking_roles_from_a_user_answers_the_roles_it_still_holds(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    reader = await factory.role("reader", tenant_id=tenant.id)
    writer = await factory.role("writer", tenant_id=tenant.id)
    user = await factory.user(tenant.id, roles=[reader, writer])

    response = await client.request(
        "DELETE",
        f"{USERS}/{user.id}/roles",
        headers=in_tenant(vendor, tenant.id),
        json={"roleIds": [writer.id]},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tenantId"], body["userId"]) == (tenant.id, user.id)
    assert [role["id"] for role in body["roles"]] == [reader.id]
    assert all(set(role) == IROLE_FIELDS for role in body["roles"])
    assert await roles_of(db, user.id) == {(tenant.id, "reader")}
    assert (
        "user.roles_unassigned",
        user.id,
        tenant.id,
    ) in await audit_actions(db)


async def test_taking_a_role_the_user_does_not_hold_changes_nothing_and_an_unknown_one_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    reader = await factory.role("reader", tenant_id=tenant.id)
    writer = await factory.role("writer", tenant_id=tenant.id)
    user = await factory.user(tenant.id, roles=[reader])
    path = f"{USERS}/{user.id}/roles"

    not_held = await client.request(
        "DELETE", path, headers=in_tenant(vendor, tenant.id), json={"roleIds": [writer.id]}
    )
    unknown = await client.request(
        "DELETE", path, headers=in_tenant(vendor, tenant.id), json={"roleIds": ["no-such-role"]}
    )
    no_tenant = await client.request("DELETE", path, headers=vendor, json={"roleIds": [reader.id]})

    assert not_held.status_code == 200, not_held.text
    assert [role["id"] for role in not_held.json()["roles"]] == [reader.id]
    assert unknown.status_code == 400, unknown.text
    assert no_tenant.status_code in (400, 422), no_tenant.text
    assert await roles_of(db, user.id) == {(tenant.id, "reader")}
