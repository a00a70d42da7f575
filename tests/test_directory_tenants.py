"""Directory: the tenant routes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.models import AuditEvent, Tenant
from tests.factories import Factory
from tests.steps import finish_jobs

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

TENANTS = "/tenants/resources/tenants/v1"
TENANT_FIELDS = {"id", "tenantId", "name", "createdAt", "updatedAt"}


async def test_creating_a_tenant_stores_it_and_answers_in_frontegg_shape(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(TENANTS, headers=vendor, json={"tenantId": "acme", "name": "Acme"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == TENANT_FIELDS
    assert body["id"] == body["tenantId"] == "acme"
    assert body["name"] == "Acme"
    assert body["createdAt"].endswith("Z")
    tenant = await db.get(Tenant, "acme")
    assert tenant is not None
    assert tenant.name == "Acme"
    events = list(await db.scalars(sa.select(AuditEvent)))
    assert [(e.action, e.target_type, e.target_id, e.tenant_id) for e in events] == [
        ("tenant.created", "tenant", "acme", "acme")
    ]
    assert events[0].actor_type == "vendor"


async def test_a_tenant_created_without_an_id_gets_a_uuid4(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(TENANTS, headers=vendor, json={"name": "Acme"})

    assert response.status_code == 201, response.text
    tenant_id = response.json()["tenantId"]
    assert uuid.UUID(tenant_id).version == 4
    assert response.json()["id"] == tenant_id
    assert await db.get(Tenant, tenant_id) is not None


async def test_creating_a_tenant_with_a_taken_id_is_a_conflict_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme", name="Original")

    response = await client.post(TENANTS, headers=vendor, json={"tenantId": "acme", "name": "New"})

    assert response.status_code == 409
    assert response.json() == {"errors": ["Tenant acme already exists"]}
    tenant = await db.get(Tenant, "acme")
    assert tenant is not None
    assert tenant.name == "Original"
    assert list(await db.scalars(sa.select(AuditEvent))) == []


async def test_bad_tenant_bodies_are_refused_and_create_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    bad_bodies: list[Any] = [
        {},
        {"name": ""},
        {"name": 5},
        {"name": "x" * 10_000},
        {"name": "Ac\x00me"},
        {"name": "Acme", "tenantId": ""},
        {"name": "Acme", "tenantId": "t" * 10_000},
        {"name": "Acme", "tenantId": "a\x00b"},
        {"name": "Acme", "plan": "gold"},
        [{"name": "Acme"}],
        "Acme",
    ]
    for body in bad_bodies:
        response = await client.post(TENANTS, headers=vendor, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["errors"], body
    malformed = await client.post(
        TENANTS, headers={**vendor, "content-type": "application/json"}, content=b'{"name": '
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"]
    assert list(await db.scalars(sa.select(Tenant))) == []
    assert list(await db.scalars(sa.select(AuditEvent))) == []


async def test_listing_tenants_returns_every_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("t-1", name="One")
    await factory.tenant("t-2", name="Two")

    response = await client.get(TENANTS, headers=vendor)

    assert response.status_code == 200
    body = response.json()
    assert sorted((t["tenantId"], t["name"]) for t in body) == [("t-1", "One"), ("t-2", "Two")]
    assert all(set(t) == TENANT_FIELDS for t in body)


async def test_listing_tenants_of_an_empty_directory_is_an_empty_array(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await client.get(TENANTS, headers=vendor)
    assert response.status_code == 200
    assert response.json() == []


async def test_getting_a_tenant_returns_it(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await factory.tenant("acme", name="Acme")

    response = await client.get(f"{TENANTS}/acme", headers=vendor)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == TENANT_FIELDS
    assert (body["id"], body["tenantId"], body["name"]) == ("acme", "acme", "Acme")


async def test_getting_an_unknown_tenant_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await client.get(f"{TENANTS}/nope", headers=vendor)
    assert response.status_code == 404
    assert response.json() == {"errors": ["Tenant nope not found"]}


async def test_a_tenant_id_too_long_for_the_path_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await client.get(f"{TENANTS}/{'t' * 10_000}", headers=vendor)
    assert response.status_code == 400
    assert response.json()["errors"]


async def test_deleting_a_tenant_answers_200_with_an_empty_body_and_is_audited(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    services: Services,
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")

    response = await client.delete(f"{TENANTS}/acme", headers=vendor)
    gone_at_once = await client.get(f"{TENANTS}/acme", headers=vendor)
    listed = await client.get(TENANTS, headers=vendor)
    await finish_jobs(services)

    assert response.status_code == 200
    assert response.content == b""
    assert gone_at_once.status_code == 404
    assert [tenant["tenantId"] for tenant in listed.json()] == ["other"]
    assert await db.get(Tenant, "acme") is None
    assert await db.get(Tenant, "other") is not None
    events = list(await db.scalars(sa.select(AuditEvent)))
    assert [(e.action, e.target_id, e.tenant_id) for e in events] == [
        ("tenant.deleted", "acme", "acme")
    ]


async def test_deleting_an_unknown_tenant_is_404_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, factory: Factory
) -> None:
    await factory.tenant("acme")

    response = await client.delete(f"{TENANTS}/nope", headers=vendor)

    assert response.status_code == 404
    assert response.json() == {"errors": ["Tenant nope not found"]}
    assert await db.get(Tenant, "acme") is not None
    assert list(await db.scalars(sa.select(AuditEvent))) == []
