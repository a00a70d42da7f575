"""Refresh-token rotation: /identity/resources/auth/v2/api-token/token/refresh."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.exchange import EXCHANGE_TOKEN_TYPES, REUSE_DETECTED
from domain.models import AuditEvent, ClientCredential, Tenant, User
from domain.secrets import sha256_hex
from tests.factories import Factory, is_usable, mark_deleted, refresh_rows
from tests.steps import (
    DISABLED,
    INVALID_REFRESH,
    PAIR_KEYS,
    REFRESH,
    exchange_ok,
    refresh,
    refresh_ok,
    set_environment,
    simple_credential,
    tenant_credential,
    user_credential,
    verified_claims,
)

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

START = datetime(2032, 6, 1, 8, 0, tzinfo=UTC)
THIRTY_DAYS = timedelta(seconds=2592000)


async def test_refresh_returns_a_new_pair_and_retires_the_token_presented(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    first = await exchange_ok(client, credential)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == PAIR_KEYS
    assert second["refresh_token"] != first["refresh_token"]
    claims = await services.keyring.verify(
        second["access_token"], EXCHANGE_TOKEN_TYPES, datetime.now(UTC)
    )
    assert claims["sub"] == credential.client_id
    assert claims["jti"] != (await verified_claims(client, vendor, first["access_token"]))["jti"]

    old, new = await refresh_rows(db, credential.client_id)
    assert old.token_hash == sha256_hex(first["refresh_token"])
    assert old.used_at is not None
    assert new.token_hash == sha256_hex(second["refresh_token"])
    assert new.parent_id == old.id
    assert new.family_id == old.family_id == old.id
    assert new.used_at is None
    assert new.revoked_at is None


async def test_a_refresh_token_works_once(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    await refresh_ok(client, token)
    again = await refresh(client, token)
    assert (again.status_code, again.json()) == (401, INVALID_REFRESH)


async def test_reusing_a_used_token_revokes_its_family_and_is_audited(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    first = (await exchange_ok(client, credential))["refresh_token"]
    other_family = (await exchange_ok(client, credential))["refresh_token"]
    second = (await refresh_ok(client, first))["refresh_token"]
    third = (await refresh_ok(client, second))["refresh_token"]

    reused = await refresh(client, first)
    assert (reused.status_code, reused.json()) == (401, INVALID_REFRESH)
    # The thief or the client, whichever holds the newest token, is cut off...
    latest = await refresh(client, third)
    assert (latest.status_code, latest.json()) == (401, INVALID_REFRESH)
    # ...and the revocation was committed although the reuse request failed.
    rows = {row.token_hash: row for row in await refresh_rows(db, credential.client_id)}
    assert rows[sha256_hex(third)].revoked_at is not None
    assert rows[sha256_hex(third)].used_at is None
    # Another exchange's family is untouched.
    assert rows[sha256_hex(other_family)].revoked_at is None
    presented, revoked = rows[sha256_hex(first)], rows[sha256_hex(third)]
    expected = {
        "tenant_id": credential.tenant_id,
        "target_id": presented.family_id,
        "details": {
            "clientId": credential.client_id,
            "presentedTokenId": presented.id,
            "revokedTokenIds": [revoked.id],
        },
    }
    [event] = await db.scalars(sa.select(AuditEvent).where(AuditEvent.action == REUSE_DETECTED))
    assert {
        "tenant_id": event.tenant_id,
        "target_id": event.target_id,
        "details": event.details,
    } == expected
    await refresh_ok(client, other_family)


async def test_only_reuse_is_audited_not_exchanges_or_refreshes(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    before = await db.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    token = (await exchange_ok(client, credential))["refresh_token"]
    await refresh_ok(client, token)
    assert (await refresh(client, "never-issued")).status_code == 401
    assert await db.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == before


async def test_rotation_keeps_the_family_absolute_expiry(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True) as frozen:
        token = (await exchange_ok(client, credential))["refresh_token"]
        frozen.move_to(START + THIRTY_DAYS - timedelta(minutes=1))
        token = (await refresh_ok(client, token))["refresh_token"]
        rows = await refresh_rows(db, credential.client_id)
        assert [row.expires_at for row in rows] == [START + THIRTY_DAYS] * 2

        frozen.move_to(START + THIRTY_DAYS)
        expired = await refresh(client, token)
        assert (expired.status_code, expired.json()) == (401, INVALID_REFRESH)
        # Expiry is not reuse: nothing was revoked, nothing audited.
        rows = await refresh_rows(db, credential.client_id)
        assert [row.revoked_at for row in rows] == [None, None]
        assert (
            await db.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == REUSE_DETECTED)
            )
            == 0
        )


async def test_refresh_token_lifetime_follows_default_refresh_token_expiration(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    await set_environment(client, vendor, defaultRefreshTokenExpiration=3600)
    credential = await simple_credential(client, vendor, factory)
    with freeze_time(START, real_asyncio=True):
        await exchange_ok(client, credential)
    [row] = await refresh_rows(db, credential.client_id)
    assert row.expires_at == START + timedelta(hours=1)


@pytest.mark.parametrize(
    "token", ["never-issued", "x" * 1024, "a.b.c"], ids=["unknown", "long", "jwt-like"]
)
async def test_unknown_refresh_token_is_refused(client: httpx.AsyncClient, token: str) -> None:
    response = await refresh(client, token)
    assert (response.status_code, response.json()) == (401, INVALID_REFRESH)


async def test_refresh_carries_the_roles_held_at_refresh_time(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    reader = await factory.role("reader", tenant_id=tenant.id)
    writer = await factory.role("writer", tenant_id=tenant.id)
    user = await factory.user(tenant.id, roles=[reader])
    credential = await user_credential(client, vendor, tenant.id, user.id)
    pair = await exchange_ok(client, credential)
    assert (await verified_claims(client, vendor, pair["access_token"]))["roles"] == ["reader"]

    response = await client.post(
        f"/identity/resources/users/v1/{user.id}/roles",
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"roleIds": [writer.id]},
    )
    assert response.status_code == 201, response.text
    refreshed = await refresh_ok(client, pair["refresh_token"])
    claims = await verified_claims(client, vendor, refreshed["access_token"])
    assert claims["roles"] == ["reader", "writer"]
    assert claims["userId"] == user.id


async def test_deleted_credential_takes_its_refresh_tokens_with_it(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    response = await client.delete(
        f"/identity/resources/tenants/api-tokens/v1/{credential.client_id}",
        headers={**vendor, "frontegg-tenant-id": credential.tenant_id},
    )
    assert response.status_code == 200, response.text
    assert await refresh_rows(db) == []
    refused = await refresh(client, token)
    assert (refused.status_code, refused.json()) == (401, INVALID_REFRESH)


async def test_expired_credential_cannot_refresh(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    credential = await tenant_credential(
        client, vendor, tenant.id, permission_ids=[permission.id], expires_in_minutes=60
    )
    token = (await exchange_ok(client, credential))["refresh_token"]
    with freeze_time(datetime.now(UTC) + timedelta(minutes=61), real_asyncio=True):
        refused = await refresh(client, token)
    assert (refused.status_code, refused.json()) == (401, INVALID_REFRESH)
    [row] = await refresh_rows(db, credential.client_id)
    assert row.used_at is None  # the refusal changed nothing


async def test_disabled_m2m_refuses_refresh_and_keeps_the_token_for_later(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    await set_environment(client, vendor, apiTokensEnabled=False)
    refused = await refresh(client, token)
    assert (refused.status_code, refused.json()) == (403, DISABLED)
    await set_environment(client, vendor, apiTokensEnabled=True)
    await refresh_ok(client, token)


async def test_20_parallel_refreshes_of_one_token_yield_exactly_one_success(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]

    responses = await asyncio.gather(*(refresh(client, token) for _ in range(20)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [401] * 19
    assert all(r.json() == INVALID_REFRESH for r in responses if r.status_code == 401)
    [winner] = [r.json() for r in responses if r.status_code == 200]
    # The losers presented a used token: reuse, so the winner's new token is revoked too.
    rows = {row.token_hash: row for row in await refresh_rows(db, credential.client_id)}
    assert len(rows) == 2
    assert not is_usable(rows[sha256_hex(winner["refresh_token"])], datetime.now(UTC))


async def test_a_refresh_token_of_a_deleted_tenant_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    await mark_deleted(db, Tenant, credential.tenant_id)
    response = await refresh(client, token)
    assert (response.status_code, response.json()) == (401, INVALID_REFRESH)
    # Refused before it was consumed: nothing about the token changed.
    [row] = await refresh_rows(db, credential.client_id)
    assert is_usable(row, datetime.now(UTC))


async def test_a_refresh_token_of_a_deleted_user_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    other_user = await factory.user(tenant.id)
    credential = await user_credential(client, vendor, tenant.id, user.id)
    other = await user_credential(client, vendor, tenant.id, other_user.id)
    token = (await exchange_ok(client, credential))["refresh_token"]
    other_token = (await exchange_ok(client, other))["refresh_token"]
    await mark_deleted(db, User, user.id)
    response = await refresh(client, token)
    assert (response.status_code, response.json()) == (401, INVALID_REFRESH)
    # Another user's credential in the same tenant still refreshes.
    await refresh_ok(client, other_token)


BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("malformed", b'{"refreshToken": '),
    ("missing", b"{}"),
    ("wrong type", b'{"refreshToken": 42}'),
    ("empty token", b'{"refreshToken": ""}'),
    ("NUL", b'{"refreshToken": "abc\\u0000"}'),
    ("huge", b'{"refreshToken": "' + b"r" * 1025 + b'"}'),
    ("unknown field", b'{"refreshToken": "abc", "clientId": "x"}'),
]


@pytest.mark.parametrize(("label", "body"), BAD_BODIES, ids=[label for label, _ in BAD_BODIES])
async def test_bad_refresh_input_is_a_400_that_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    label: str,
    body: bytes,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await exchange_ok(client, credential)
    before = [(row.id, row.used_at, row.revoked_at) for row in await refresh_rows(db)]
    response = await client.post(
        REFRESH, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, (label, response.text)
    assert response.json()["errors"]
    assert [(row.id, row.used_at, row.revoked_at) for row in await refresh_rows(db)] == before
    assert await db.scalar(sa.select(sa.func.count()).select_from(ClientCredential)) == 1
