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
FE_SECURE = {
    f"fe.secure.{action}.{resource}"
    for action in ("read", "write", "delete")
    for resource in ("userApiTokens", "tenantApiTokens")
}


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
