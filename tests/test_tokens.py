"""Token management rules every kind shares: who may act where, creation gates, bad input and
the secret shown once. Kind-specific behaviour lives in tests/test_tokens_<kind>.py."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent
from tests.factories import Factory, build_world, stored
from tests.kinds import TENANT_ACCESS, TENANT_API, TOKEN_PERMISSIONS, USER_ACCESS, USER_API, Kind
from tests.steps import CONFIG, create, listed_ids, use_strategy, vendor_acting

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

KINDS = [USER_API, USER_ACCESS, TENANT_API, TENANT_ACCESS]
by_kind = pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)


# --- the life of a token ---------------------------------------------------------------------


@by_kind
async def test_vendor_creates_lists_and_deletes_a_token_with_audit_events(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)

    created = await create(client, headers, kind, {"description": "ci"})
    token_id = created[kind.id_key]
    assert await listed_ids(client, headers, kind) == [token_id]

    deleted = await client.delete(kind.item(token_id), headers=headers)
    assert deleted.status_code == 200
    assert deleted.content == b""
    assert await listed_ids(client, headers, kind) == []
    assert await stored(db, kind) == []

    events = list(await db.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)))
    token_events = [e for e in events if e.action.startswith("token.")]
    assert [e.action for e in token_events] == ["token.created", "token.deleted"]
    for event in token_events:
        assert event.target_id == token_id
        assert event.tenant_id == world.tenant.id
        assert event.details["kind"] == kind.name
        assert event.actor_type == "vendor"
        assert created["secret"] not in json.dumps(event.details)


@by_kind
async def test_tokens_are_listed_oldest_first(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    made = [(await create(client, headers, kind))[kind.id_key] for _ in range(3)]
    assert await listed_ids(client, headers, kind) == made


@by_kind
async def test_expiry_bounds_are_accepted_and_absent_means_never(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)

    never = await create(client, headers, kind)
    assert never["expires"] is None
    for minutes in (1, 5_256_000):
        created = await create(client, headers, kind, {"expiresInMinutes": minutes})
        made = datetime.fromisoformat(created["createdAt"])
        expires = datetime.fromisoformat(created["expires"])
        assert (expires - made).total_seconds() == minutes * 60
    listed = (await client.get(kind.path, headers=headers)).json()
    assert [item["expires"] is None for item in kind.listed(listed)] == [True, False, False]


# --- who acts, and where ---------------------------------------------------------------------


@by_kind
async def test_vendor_must_name_the_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = {**vendor, "frontegg-user-id": world.admin.id}
    for response in (
        await client.post(kind.creates, headers=headers, json={}),
        await client.get(kind.path, headers=headers),
        await client.delete(kind.item("x"), headers=headers),
    ):
        assert response.status_code == 400
        assert "frontegg-tenant-id" in response.json()["errors"][0]


@by_kind
async def test_without_credentials_the_answer_is_401_whatever_the_headers_name(
    client: httpx.AsyncClient, kind: Kind
) -> None:
    """Authentication comes first: malformed frontegg-* headers do not turn a request that has
    no valid token into a 400."""
    headers = {"frontegg-tenant-id": "t" * 300, "frontegg-user-id": "u" * 300}
    for response in (
        await client.post(kind.creates, headers=headers, json={}),
        await client.get(kind.path, headers=headers),
        await client.delete(kind.item("x"), headers=headers),
        await client.get(kind.path, headers={**headers, "Authorization": "Bearer forged"}),
    ):
        assert response.status_code == 401
        assert "token" in response.json()["errors"][0].lower()


@pytest.mark.parametrize("kind", [USER_API, USER_ACCESS], ids=lambda kind: kind.name)
async def test_vendor_must_name_the_user_on_user_routes(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = {**vendor, "frontegg-tenant-id": world.tenant.id}
    for response in (
        await client.post(kind.creates, headers=headers, json={}),
        await client.get(kind.path, headers=headers),
        await client.delete(kind.item("x"), headers=headers),
    ):
        assert response.status_code == 400
        assert "frontegg-user-id" in response.json()["errors"][0]
    assert await stored(db, kind) == []


@by_kind
async def test_unknown_tenant_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, "no-such-tenant", world.admin.id)
    for response in (
        await client.post(kind.creates, headers=headers, json={}),
        await client.get(kind.path, headers=headers),
    ):
        assert response.status_code == 404
        assert response.json() == {"errors": ["Tenant no-such-tenant not found"]}


@by_kind
async def test_named_user_of_another_tenant_is_404(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    # Tenant routes accept frontegg-user-id from the vendor too, as the acting user.
    headers = {
        **vendor,
        "frontegg-tenant-id": world.tenant.id,
        "frontegg-user-id": world.stranger.id,
    }
    for response in (
        await client.post(kind.creates, headers=headers, json={}),
        await client.get(kind.path, headers=headers),
    ):
        assert response.status_code == 404
        assert response.json() == {"errors": [f"User {world.stranger.id} not found"]}
    assert await stored(db, kind) == []


@by_kind
async def test_another_tenants_token_is_404_and_never_listed(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    theirs = await create(
        client, vendor_acting(vendor, kind, world.other_tenant.id, world.stranger.id), kind
    )
    token_id = theirs[kind.id_key]

    as_vendor = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    as_admin = end_user(world.admin.id, world.tenant.id)
    for headers in (as_vendor, as_admin):
        assert await listed_ids(client, headers, kind) == []
        response = await client.delete(kind.item(token_id), headers=headers)
        assert response.status_code == 404, response.text
    assert len(await stored(db, kind)) == 1


@pytest.mark.parametrize("kind", [USER_API, USER_ACCESS], ids=lambda kind: kind.name)
async def test_another_users_token_is_404_and_never_listed(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    colleagues = await create(
        client, vendor_acting(vendor, kind, world.tenant.id, world.colleague.id), kind
    )
    token_id = colleagues[kind.id_key]

    as_vendor_for_admin = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    as_admin = end_user(world.admin.id, world.tenant.id)
    for headers in (as_vendor_for_admin, as_admin):
        assert await listed_ids(client, headers, kind) == []
        response = await client.delete(kind.item(token_id), headers=headers)
        assert response.status_code == 404, response.text
    assert len(await stored(db, kind)) == 1


@pytest.mark.parametrize(
    ("from_kind", "to_kind"),
    [
        (USER_API, TENANT_API),
        (TENANT_API, USER_API),
        (USER_ACCESS, TENANT_ACCESS),
        (TENANT_ACCESS, USER_ACCESS),
    ],
    ids=lambda kind: kind.name,
)
async def test_a_token_cannot_be_deleted_through_another_kinds_route(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    from_kind: Kind,
    to_kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, from_kind)
    created = await create(
        client, vendor_acting(vendor, from_kind, world.tenant.id, world.admin.id), from_kind
    )
    response = await client.delete(
        to_kind.item(created[from_kind.id_key]),
        headers=vendor_acting(vendor, to_kind, world.tenant.id, world.admin.id),
    )
    assert response.status_code == 404
    assert len(await stored(db, from_kind)) == 1


@by_kind
async def test_end_user_acts_in_its_own_tenant_whatever_headers_it_sends(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = {
        **end_user(world.admin.id, world.tenant.id),
        "frontegg-tenant-id": world.other_tenant.id,
        "frontegg-user-id": world.stranger.id,
    }
    await create(client, headers, kind)
    [row] = await stored(db, kind)
    assert row.tenant_id == world.tenant.id
    assert row.created_by_user_id == world.admin.id
    assert row.user_id == (world.admin.id if kind.for_user else None)


@by_kind
@pytest.mark.parametrize("action", ["read", "write", "delete"])
async def test_end_user_without_the_permission_is_403(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
    action: str,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    existing = await create(client, end_user(world.admin.id, world.tenant.id), kind)
    # Every token permission but the one this action needs, on both resources.
    needed = f"fe.secure.{action}.{kind.resource}"
    role = await factory.role(
        tenant_id=world.tenant.id, permission_keys=[p for p in TOKEN_PERMISSIONS if p != needed]
    )
    user = await factory.user(world.tenant.id, roles=[role])
    headers = end_user(user.id, world.tenant.id)

    if action == "read":
        response = await client.get(kind.path, headers=headers)
    elif action == "write":
        response = await client.post(kind.creates, headers=headers, json={})
    else:
        response = await client.delete(kind.item(existing[kind.id_key]), headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": [f"Missing permission {needed}"]}
    assert len(await stored(db, kind)) == 1


# --- creation gates --------------------------------------------------------------------------


@by_kind
async def test_disabled_m2m_refuses_creation_but_still_lists_and_deletes(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    existing = await create(client, headers, kind)
    off = await client.post(CONFIG, headers=vendor, json={"apiTokensEnabled": False})
    assert off.status_code == 201

    refused = await client.post(kind.creates, headers=headers, json=kind.body)
    assert refused.status_code == 403
    assert refused.json() == {"errors": ["Api tokens are disabled"]}
    assert await listed_ids(client, headers, kind) == [existing[kind.id_key]]
    deleted = await client.delete(kind.item(existing[kind.id_key]), headers=headers)
    assert deleted.status_code == 200
    assert await stored(db, kind) == []


@by_kind
async def test_creation_of_the_kind_the_strategy_does_not_choose_is_403(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    other = "AccessToken" if kind.strategy == "ClientCredentials" else "ClientCredentials"
    switched = await client.post(
        CONFIG, headers=vendor, json={"machineToMachineAuthStrategy": other}
    )
    assert switched.status_code == 201
    response = await client.post(
        kind.creates,
        headers=vendor_acting(vendor, kind, world.tenant.id, world.admin.id),
        json=kind.body,
    )
    assert response.status_code == 403
    assert other in response.json()["errors"][0]
    assert await stored(db, kind) == []


# --- bad input -------------------------------------------------------------------------------


BAD_EXPIRIES: list[Any] = [0, 5_256_001, -1, 1.5, "10", True, None, [10], {"m": 1}]


@by_kind
async def test_bad_expiry_is_400_and_stores_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    for minutes in BAD_EXPIRIES:
        response = await client.post(
            kind.creates, headers=headers, json={**kind.body, "expiresInMinutes": minutes}
        )
        assert response.status_code == 400, (minutes, response.text)
        assert "expiresInMinutes" in response.json()["errors"][0], minutes
    assert await stored(db, kind) == []


@by_kind
async def test_ownership_fields_in_the_body_are_400_and_store_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    for field_name in ("tenantId", "createdByUserId", "userId", "secret", "id"):
        for headers in (
            vendor_acting(vendor, kind, world.tenant.id, world.admin.id),
            end_user(world.admin.id, world.tenant.id),
        ):
            response = await client.post(
                kind.creates, headers=headers, json={**kind.body, field_name: world.stranger.id}
            )
            assert response.status_code == 400, response.text
            assert field_name in response.json()["errors"][0]
    assert await stored(db, kind) == []


@by_kind
@pytest.mark.parametrize(
    "description", ["nul\x00byte", "x" * 10_000], ids=["nul-byte", "10000-chars"]
)
async def test_bad_description_is_400_and_stores_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    kind: Kind,
    description: str,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    response = await client.post(
        kind.creates,
        headers=vendor_acting(vendor, kind, world.tenant.id, world.admin.id),
        json={**kind.body, "description": description},
    )
    assert response.status_code == 400, response.text
    assert "description" in response.json()["errors"][0]
    assert await stored(db, kind) == []


@by_kind
async def test_unknown_token_id_is_404(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    response = await client.delete(
        kind.item("2b1c7d7e-0000-4000-8000-000000000000"), headers=headers
    )
    assert response.status_code == 404
    assert response.json()["errors"]


@by_kind
async def test_path_id_with_a_nul_byte_is_400(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, kind: Kind
) -> None:
    world = await build_world(factory)
    headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    response = await client.delete(kind.item("bad%00id"), headers=headers)
    assert response.status_code == 400


# --- the secret is shown once ----------------------------------------------------------------


@by_kind
async def test_secret_appears_in_no_response_after_creation(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    end_user: Any,
    factory: Factory,
    kind: Kind,
) -> None:
    world = await build_world(factory)
    await use_strategy(client, vendor, kind)
    vendor_headers = vendor_acting(vendor, kind, world.tenant.id, world.admin.id)
    user_headers = end_user(world.admin.id, world.tenant.id)
    created = await create(client, vendor_headers, kind)
    secret = created["secret"]
    assert len(secret) >= 43

    responses = [
        await client.get(kind.path, headers=vendor_headers),
        await client.get(kind.path, headers=user_headers),
        await client.post(kind.creates, headers=vendor_headers, json=kind.body),
    ]
    if kind is TENANT_API:
        item = kind.item(created["clientId"])
        responses.append(
            await client.patch(item, headers=vendor_headers, json={"description": "renamed"})
        )
        responses.append(await client.patch(item, headers=user_headers, json={"metadata": {}}))
    responses.append(await client.delete(kind.item(created[kind.id_key]), headers=user_headers))
    responses.append(await client.get(kind.path, headers=vendor_headers))
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert secret not in response.text
    for item in kind.listed(responses[0].json()):
        assert "secret" not in item
