"""Directory: the permission routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent, Permission
from tests.factories import Factory

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

PERMISSIONS = "/identity/resources/permissions/v1"
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
# The built-in permissions: the six over tokens, and the two over the account token policy.
FE_SECURE = {
    f"fe.secure.{action}.{resource}"
    for action in ("read", "write", "delete")
    for resource in ("userApiTokens", "tenantApiTokens")
} | {"fe.secure.read.audits", "fe.secure.read.tokenPolicy", "fe.secure.write.tokenPolicy"}


async def custom_keys(db: AsyncSession) -> set[str]:
    return set(
        await db.scalars(sa.select(Permission.key).where(Permission.fe_permission.is_(False)))
    )


async def test_listing_permissions_gives_the_seeded_token_permissions_and_their_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    role = await factory.role("reader", permission_keys=["fe.secure.read.userApiTokens"])
    custom = await factory.permission("reports.read")

    response = await client.get(PERMISSIONS, headers=vendor)

    assert response.status_code == 200
    body = response.json()
    assert all(set(p) == PERMISSION_FIELDS for p in body)
    by_key = {p["key"]: p for p in body}
    assert set(by_key) == FE_SECURE | {"reports.read"}
    assert all(by_key[key]["fePermission"] is True for key in FE_SECURE)
    assert by_key["fe.secure.read.userApiTokens"]["roleIds"] == [role.id]
    assert by_key["fe.secure.write.userApiTokens"]["roleIds"] == []
    assert by_key["reports.read"]["id"] == custom.id
    assert by_key["reports.read"]["fePermission"] is False


async def test_creating_permissions_stores_the_batch_and_audits_each(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        PERMISSIONS,
        headers=vendor,
        json=[
            {
                "key": "reports.read",
                "name": "Read reports",
                "description": "See every report",
                "categoryId": "reports",
                "assignmentType": "ASSIGNABLE",
            },
            {"key": "reports.write", "name": "Write reports"},
        ],
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert [set(p) for p in body] == [PERMISSION_FIELDS, PERMISSION_FIELDS]
    read, write = body
    assert (read["key"], read["name"], read["description"], read["categoryId"]) == (
        "reports.read",
        "Read reports",
        "See every report",
        "reports",
    )
    assert (read["roleIds"], read["fePermission"]) == ([], False)
    assert (write["description"], write["categoryId"]) == (None, None)
    stored = await db.get(Permission, read["id"])
    assert stored is not None
    assert (stored.key, stored.category_id, stored.fe_permission) == (
        "reports.read",
        "reports",
        False,
    )
    events = list(await db.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)))
    assert [(e.action, e.target_type, e.target_id) for e in events] == [
        ("permission.created", "permission", read["id"]),
        ("permission.created", "permission", write["id"]),
    ]


async def test_creating_a_permission_with_a_taken_key_creates_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        PERMISSIONS,
        headers=vendor,
        json=[
            {"key": "reports.read", "name": "Read reports"},
            {"key": "fe.secure.read.userApiTokens", "name": "Mine"},
        ],
    )

    assert response.status_code == 409
    assert response.json() == {
        "errors": ["Permission keys already exist: fe.secure.read.userApiTokens"]
    }
    assert await custom_keys(db) == set()
    assert list(await db.scalars(sa.select(AuditEvent))) == []


async def test_a_permission_key_twice_in_one_batch_is_a_conflict(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        PERMISSIONS,
        headers=vendor,
        json=[{"key": "dup", "name": "One"}, {"key": "dup", "name": "Two"}],
    )

    assert response.status_code == 409
    assert response.json() == {"errors": ["Permission keys repeated in the request: dup"]}
    assert await custom_keys(db) == set()


async def test_bad_permission_batches_are_refused_and_create_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    good = {"key": "k", "name": "N"}
    bad_bodies: list[Any] = [
        [],
        good,
        [good] * 101,
        [{"key": "k"}],
        [{"name": "N"}],
        [{**good, "key": ""}],
        [{**good, "key": "x" * 10_000}],
        [{**good, "description": "x" * 10_000}],
        [{**good, "name": "N\x00"}],
        [{**good, "assignmentType": "SOMETIMES"}],
        [{**good, "fePermission": True}],
        [{**good, "roleIds": []}],
    ]
    for body in bad_bodies:
        response = await client.post(PERMISSIONS, headers=vendor, json=body)
        assert response.status_code == 400, (str(body)[:80], response.text)
        assert response.json()["errors"]
    assert await custom_keys(db) == set()
    assert list(await db.scalars(sa.select(AuditEvent))) == []


# --- update and delete ------------------------------------------------------------------------


async def test_updating_a_permission_changes_its_fields_and_keeps_its_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    permission = await factory.permission("reports.read")
    role = await factory.role("analyst", permission_keys=["reports.read"])

    response = await client.patch(
        f"{PERMISSIONS}/{permission.id}",
        headers=vendor,
        json={"key": "reports.view", "name": "View reports", "description": "d", "categoryId": "c"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PERMISSION_FIELDS
    assert (body["id"], body["key"], body["name"], body["description"], body["categoryId"]) == (
        permission.id,
        "reports.view",
        "View reports",
        "d",
        "c",
    )
    assert body["roleIds"] == [role.id]
    assert body["fePermission"] is False
    assert await custom_keys(db) == {"reports.view"}


async def test_updating_a_permission_to_a_taken_key_is_a_conflict(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    permission = await factory.permission("reports.read")
    await factory.permission("reports.write")

    response = await client.patch(
        f"{PERMISSIONS}/{permission.id}", headers=vendor, json={"key": "reports.write"}
    )

    assert response.status_code == 409, response.text
    assert await custom_keys(db) == {"reports.read", "reports.write"}


async def test_deleting_a_permission_answers_204_and_takes_it_from_its_roles(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    permission = await factory.permission("reports.read")
    role = await factory.role("analyst", permission_keys=["reports.read"])

    response = await client.delete(f"{PERMISSIONS}/{permission.id}", headers=vendor)

    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await custom_keys(db) == set()
    listed = await client.get("/identity/resources/roles/v1", headers=vendor)
    assert {r["id"]: r["permissions"] for r in listed.json()}[role.id] == []
    again = await client.delete(f"{PERMISSIONS}/{permission.id}", headers=vendor)
    assert again.status_code == 404


@pytest.mark.parametrize("key", sorted(FE_SECURE))
async def test_the_built_in_token_permissions_can_be_neither_changed_nor_deleted(
    key: str, client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    permission_id = await db.scalar(sa.select(Permission.id).where(Permission.key == key))

    changed = await client.patch(
        f"{PERMISSIONS}/{permission_id}", headers=vendor, json={"name": "Renamed"}
    )
    deleted = await client.delete(f"{PERMISSIONS}/{permission_id}", headers=vendor)

    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert "built in" in deleted.json()["errors"][0]
    stored = await db.scalar(sa.select(Permission).where(Permission.key == key))
    assert stored is not None
    assert stored.name != "Renamed"
