"""Directory: the role routes (list, create, update, delete, set permissions)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent, Role, role_permissions, user_roles
from tests.factories import Factory

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

ROLES = "/identity/resources/roles/v1"
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


def in_tenant(vendor: dict[str, str], tenant_id: str) -> dict[str, str]:
    return {**vendor, "frontegg-tenant-id": tenant_id}


async def stored_roles(db: AsyncSession) -> set[tuple[str | None, str]]:
    return {(r.tenant_id, r.key) for r in await db.scalars(sa.select(Role))}


async def holders_of(db: AsyncSession, role_id: str) -> set[tuple[str, str]]:
    rows = await db.execute(
        sa.select(user_roles.c.user_id, user_roles.c.tenant_id).where(
            user_roles.c.role_id == role_id
        )
    )
    return {(user_id, tenant_id) for user_id, tenant_id in rows}


async def audit_actions(db: AsyncSession) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    events = await db.scalars(sa.select(AuditEvent).order_by(AuditEvent.id))
    return [(e.action, e.target_id, e.tenant_id, e.details) for e in events]


async def make_default(factory: Factory, role: Role) -> None:
    async with factory._sessions() as session:
        await session.execute(sa.update(Role).where(Role.id == role.id).values(is_default=True))
        await session.commit()


# --- list -------------------------------------------------------------------------------------


async def test_listing_roles_for_a_tenant_gives_environment_roles_and_its_own(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    env_role = await factory.role("admin", permission_keys=["fe.secure.read.userApiTokens"])
    await factory.role("acme-only", tenant_id="acme")
    await factory.role("other-only", tenant_id="other")

    scoped = await client.get(ROLES, headers=in_tenant(vendor, "acme"))
    everything = await client.get(ROLES, headers=vendor)

    assert scoped.status_code == everything.status_code == 200
    assert all(set(role) == ROLE_FIELDS for role in scoped.json())
    assert {(r["tenantId"], r["key"]) for r in scoped.json()} == {
        (None, "admin"),
        ("acme", "acme-only"),
    }
    assert sorted(r["key"] for r in everything.json()) == ["acme-only", "admin", "other-only"]
    admin = next(r for r in everything.json() if r["key"] == "admin")
    assert admin["id"] == env_role.id
    assert admin["vendorId"] is None
    assert admin["permissions"] == await factory.permission_ids(["fe.secure.read.userApiTokens"])


async def test_listing_roles_of_an_unknown_tenant_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await client.get(ROLES, headers=in_tenant(vendor, "nope"))
    assert response.status_code == 404
    assert response.json() == {"errors": ["Tenant nope not found"]}


# --- create -----------------------------------------------------------------------------------


async def test_creating_roles_stores_the_batch_and_audits_each(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        ROLES,
        headers=vendor,
        json=[
            {"key": "admin", "name": "Admin", "level": 0, "description": "All of it"},
            {"key": "viewer", "name": "Viewer", "level": 5, "isDefault": True},
        ],
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert [set(role) for role in body] == [ROLE_FIELDS, ROLE_FIELDS]
    admin, viewer = body
    assert (admin["key"], admin["name"], admin["level"], admin["description"]) == (
        "admin",
        "Admin",
        0,
        "All of it",
    )
    assert (admin["tenantId"], admin["vendorId"], admin["permissions"]) == (None, None, [])
    assert (admin["isDefault"], admin["firstUserRole"]) == (False, False)
    assert (viewer["isDefault"], viewer["level"]) == (True, 5)
    stored = await db.get(Role, viewer["id"])
    assert stored is not None
    assert (stored.tenant_id, stored.key, stored.is_default, stored.level) == (
        None,
        "viewer",
        True,
        5,
    )
    assert [(a, t) for a, t, _, _ in await audit_actions(db)] == [
        ("role.created", admin["id"]),
        ("role.created", viewer["id"]),
    ]


async def test_creating_roles_with_a_tenant_header_makes_them_that_tenants(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.role("admin")

    response = await client.post(
        ROLES,
        headers=in_tenant(vendor, "acme"),
        json=[{"key": "admin", "name": "Acme admin", "level": 1}],
    )

    assert response.status_code == 201, response.text
    assert response.json()[0]["tenantId"] == "acme"
    assert await stored_roles(db) == {(None, "admin"), ("acme", "admin")}
    assert [(a, tenant) for a, _, tenant, _ in await audit_actions(db)] == [
        ("role.created", "acme")
    ]


async def test_creating_roles_for_an_unknown_tenant_is_404_and_creates_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        ROLES, headers=in_tenant(vendor, "nope"), json=[{"key": "a", "name": "A", "level": 0}]
    )
    assert response.status_code == 404
    assert await stored_roles(db) == set()


async def test_creating_a_role_with_a_taken_key_creates_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.role("admin")

    response = await client.post(
        ROLES,
        headers=vendor,
        json=[
            {"key": "fresh", "name": "Fresh", "level": 0},
            {"key": "admin", "name": "A", "level": 0},
        ],
    )

    assert response.status_code == 409
    assert response.json() == {"errors": ["Role keys already exist: admin"]}
    assert await stored_roles(db) == {(None, "admin")}
    assert await audit_actions(db) == []


async def test_a_key_twice_in_one_batch_is_a_conflict_and_creates_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        ROLES,
        headers=vendor,
        json=[{"key": "dup", "name": "One", "level": 0}, {"key": "dup", "name": "Two", "level": 1}],
    )

    assert response.status_code == 409
    assert response.json() == {"errors": ["Role keys repeated in the request: dup"]}
    assert await stored_roles(db) == set()


async def test_a_new_default_role_with_migrate_role_goes_to_every_existing_user_in_scope(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    await factory.user("acme", user_id="a-1")
    await factory.user("other", user_id="o-1")

    everywhere = await client.post(
        ROLES,
        headers=vendor,
        json=[{"key": "member", "name": "M", "level": 9, "isDefault": True, "migrateRole": True}],
    )
    acme_only = await client.post(
        ROLES,
        headers=in_tenant(vendor, "acme"),
        json=[
            {"key": "acme-member", "name": "M", "level": 9, "isDefault": True, "migrateRole": True}
        ],
    )
    not_migrated = await client.post(
        ROLES, headers=vendor, json=[{"key": "later", "name": "L", "level": 9, "isDefault": True}]
    )

    assert everywhere.status_code == acme_only.status_code == not_migrated.status_code == 201
    assert await holders_of(db, everywhere.json()[0]["id"]) == {("a-1", "acme"), ("o-1", "other")}
    assert await holders_of(db, acme_only.json()[0]["id"]) == {("a-1", "acme")}
    assert await holders_of(db, not_migrated.json()[0]["id"]) == set()
    details = [d for _, _, _, d in await audit_actions(db)]
    assert details[:2] == [
        {"key": "member", "migratedUsers": 2},
        {"key": "acme-member", "migratedUsers": 1},
    ]


async def test_migrate_role_without_is_default_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        ROLES, headers=vendor, json=[{"key": "m", "name": "M", "level": 0, "migrateRole": True}]
    )

    assert response.status_code == 400
    assert response.json() == {
        "errors": ["migrateRole applies only to a default role: set isDefault to true"]
    }
    assert await stored_roles(db) == set()


async def test_bad_role_batches_are_refused_and_create_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    good = {"key": "k", "name": "N", "level": 0}
    bad_bodies: list[Any] = [
        [],
        good,
        [good] * 101,
        [{**good, "level": -1}],
        [{**good, "level": 32768}],
        [{**good, "level": 1.5}],
        [{"name": "N", "level": 0}],
        [{"key": "k", "level": 0}],
        [{"key": "k", "name": "N"}],
        [{**good, "key": ""}],
        [{**good, "name": "x" * 10_000}],
        [{**good, "description": "x" * 10_000}],
        [{**good, "key": "k\x00"}],
        [{**good, "permissions": []}],
        [{**good, "isDefault": "yes"}],
        [None],
    ]
    for body in bad_bodies:
        response = await client.post(ROLES, headers=vendor, json=body)
        assert response.status_code == 400, (str(body)[:80], response.text)
        assert response.json()["errors"]
    assert await stored_roles(db) == set()
    assert await audit_actions(db) == []


# --- update -----------------------------------------------------------------------------------


async def test_updating_a_role_changes_the_fields_sent(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    role = await factory.role("admin", permission_keys=["fe.secure.read.userApiTokens"])

    response = await client.patch(
        f"{ROLES}/{role.id}",
        headers=vendor,
        json={"key": "root", "description": "Everything", "level": 3, "firstUserRole": True},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ROLE_FIELDS
    assert (body["id"], body["key"], body["name"], body["description"]) == (
        role.id,
        "root",
        "Admin",
        "Everything",
    )
    assert (body["level"], body["firstUserRole"], body["isDefault"]) == (3, True, False)
    assert body["permissions"] == await factory.permission_ids(["fe.secure.read.userApiTokens"])
    assert body["updatedAt"] >= body["createdAt"]
    stored = await db.get(Role, role.id)
    assert stored is not None
    assert (stored.key, stored.description, stored.level, stored.first_user_role) == (
        "root",
        "Everything",
        3,
        True,
    )
    assert await audit_actions(db) == [
        (
            "role.updated",
            role.id,
            None,
            {"changed": ["key", "description", "level", "first_user_role"], "migratedUsers": 0},
        )
    ]


async def test_updating_a_role_to_a_taken_key_is_a_conflict_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.role("admin")
    role = await factory.role("viewer")
    tenant_role = await factory.role("viewer", tenant_id="acme")

    clash = await client.patch(
        f"{ROLES}/{role.id}", headers=vendor, json={"key": "admin", "name": "New"}
    )
    other_scope = await client.patch(
        f"{ROLES}/{tenant_role.id}", headers=vendor, json={"key": "admin"}
    )

    assert clash.status_code == 409
    assert clash.json() == {"errors": ["Role key admin already exists"]}
    assert other_scope.status_code == 200, other_scope.text
    stored = await db.get(Role, role.id)
    assert stored is not None
    assert (stored.key, stored.name) == ("viewer", "Viewer")
    assert await stored_roles(db) == {(None, "admin"), (None, "viewer"), ("acme", "admin")}


async def test_updating_a_role_with_migrate_role_gives_it_to_users_lacking_it(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role("member", tenant_id="acme")
    await factory.user("acme", user_id="has-it", roles=[role])
    await factory.user("acme", user_id="lacks-it")

    response = await client.patch(
        f"{ROLES}/{role.id}",
        headers=in_tenant(vendor, "acme"),
        json={"isDefault": True, "migrateRole": True},
    )

    assert response.status_code == 200, response.text
    assert response.json()["isDefault"] is True
    assert await holders_of(db, role.id) == {("has-it", "acme"), ("lacks-it", "acme")}
    assert await audit_actions(db) == [
        ("role.updated", role.id, "acme", {"changed": ["is_default"], "migratedUsers": 1})
    ]


async def test_migrate_role_on_a_role_left_not_default_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role("member")
    await factory.user("acme", user_id="u-1")

    response = await client.patch(
        f"{ROLES}/{role.id}", headers=vendor, json={"migrateRole": True, "name": "Renamed"}
    )

    assert response.status_code == 400
    assert await holders_of(db, role.id) == set()
    stored = await db.get(Role, role.id)
    assert stored is not None
    assert stored.name == "Member"


async def test_migrate_role_on_an_already_default_role_needs_no_is_default_in_the_body(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role("member")
    await make_default(factory, role)
    await factory.user("acme", user_id="u-1")

    response = await client.patch(f"{ROLES}/{role.id}", headers=vendor, json={"migrateRole": True})

    assert response.status_code == 200, response.text
    assert await holders_of(db, role.id) == {("u-1", "acme")}


async def test_another_tenants_role_is_unknown_with_a_tenant_header(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    foreign = await factory.role("foreign", tenant_id="other")
    path = f"{ROLES}/{foreign.id}"
    headers = in_tenant(vendor, "acme")

    patched = await client.patch(path, headers=headers, json={"name": "Mine now"})
    put = await client.put(f"{path}/permissions", headers=headers, json={"permissionIds": []})
    deleted = await client.delete(path, headers=headers)

    for response in (patched, put, deleted):
        assert response.status_code == 404, response.text
        assert response.json() == {"errors": [f"Role {foreign.id} not found"]}
    stored = await db.get(Role, foreign.id)
    assert stored is not None
    assert stored.name == "Foreign"
    assert await audit_actions(db) == []


async def test_an_environment_role_can_be_changed_with_a_tenant_header(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role("admin")

    response = await client.patch(
        f"{ROLES}/{role.id}", headers=in_tenant(vendor, "acme"), json={"name": "Boss"}
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["tenantId"]) == ("Boss", None)


async def test_unknown_roles_are_404_on_every_role_route(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    path = f"{ROLES}/nope"
    responses = [
        await client.patch(path, headers=vendor, json={"name": "X"}),
        await client.put(f"{path}/permissions", headers=vendor, json={"permissionIds": []}),
        await client.delete(path, headers=vendor),
    ]
    for response in responses:
        assert response.status_code == 404
        assert response.json() == {"errors": ["Role nope not found"]}


async def test_bad_role_updates_are_refused_and_change_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    role = await factory.role("admin")
    for body in (
        {"level": 40000},
        {"level": -1},
        {"key": ""},
        {"name": "x" * 10_000},
        {"permissions": ["p"]},
        {"tenantId": "acme"},
        {"isDefault": None, "name": 3},
        [],
    ):
        response = await client.patch(f"{ROLES}/{role.id}", headers=vendor, json=body)
        assert response.status_code == 400, (body, response.text)
    stored = await db.get(Role, role.id)
    assert stored is not None
    assert (stored.key, stored.name, stored.level) == ("admin", "Admin", 0)
    assert await audit_actions(db) == []


# --- delete -----------------------------------------------------------------------------------


async def test_deleting_a_role_answers_204_and_takes_it_from_its_users(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")
    role = await factory.role(
        "reader", tenant_id="acme", permission_keys=["fe.secure.read.userApiTokens"]
    )
    kept = await factory.role("writer")
    await factory.user("acme", user_id="u-1", roles=[role, kept])

    response = await client.delete(f"{ROLES}/{role.id}", headers=in_tenant(vendor, "acme"))

    assert response.status_code == 204
    assert response.content == b""
    assert await stored_roles(db) == {(None, "writer")}
    assert await holders_of(db, role.id) == set()
    assert await holders_of(db, kept.id) == {("u-1", "acme")}
    assert list(await db.execute(sa.select(role_permissions))) == []
    assert await audit_actions(db) == [("role.deleted", role.id, "acme", {"key": "reader"})]


# --- set permissions --------------------------------------------------------------------------


async def test_setting_role_permissions_replaces_them(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    role = await factory.role(
        "reader", permission_keys=["fe.secure.read.userApiTokens", "fe.secure.read.tenantApiTokens"]
    )
    custom = await factory.permission("reports.read")
    [kept] = await factory.permission_ids(["fe.secure.read.userApiTokens"])
    [dropped] = await factory.permission_ids(["fe.secure.read.tenantApiTokens"])

    response = await client.put(
        f"{ROLES}/{role.id}/permissions",
        headers=vendor,
        json={"permissionIds": [kept, custom.id]},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ROLE_FIELDS
    assert sorted(body["permissions"]) == sorted([kept, custom.id])
    stored = set(
        await db.scalars(
            sa.select(role_permissions.c.permission_id).where(role_permissions.c.role_id == role.id)
        )
    )
    assert stored == {kept, custom.id}
    assert await audit_actions(db) == [
        ("role.permissions_set", role.id, None, {"added": [custom.id], "removed": [dropped]})
    ]


async def test_setting_no_permissions_clears_the_role(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    role = await factory.role("reader", permission_keys=["fe.secure.read.userApiTokens"])

    response = await client.put(
        f"{ROLES}/{role.id}/permissions", headers=vendor, json={"permissionIds": []}
    )

    assert response.status_code == 200
    assert response.json()["permissions"] == []
    assert list(await db.execute(sa.select(role_permissions))) == []


async def test_setting_unknown_permissions_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    role = await factory.role("reader", permission_keys=["fe.secure.read.userApiTokens"])
    [held] = await factory.permission_ids(["fe.secure.read.userApiTokens"])
    [other] = await factory.permission_ids(["fe.secure.write.userApiTokens"])

    unknown = await client.put(
        f"{ROLES}/{role.id}/permissions", headers=vendor, json={"permissionIds": [other, "nope"]}
    )
    malformed = [
        await client.put(f"{ROLES}/{role.id}/permissions", headers=vendor, json=body)
        for body in ({}, {"permissionIds": "p"}, {"permissionIds": ["x" * 10_000]}, [other])
    ]

    assert unknown.status_code == 400
    assert unknown.json() == {"errors": ["Unknown permission ids: nope"]}
    assert [r.status_code for r in malformed] == [400] * 4
    stored = list(await db.scalars(sa.select(role_permissions.c.permission_id)))
    assert stored == [held]
    assert await audit_actions(db) == []
