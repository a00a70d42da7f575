"""Client-credential exchange: /identity/resources/auth/v2/api-token and the legacy v1 route."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.exchange import EXCHANGE_TOKEN_TYPES
from domain.models import (
    AuditEvent,
    ClientCredential,
    Tenant,
    User,
    credential_roles,
)
from domain.secrets import sha256_hex
from tests.factories import Factory, mark_deleted, refresh_rows
from tests.steps import (
    DISABLED,
    EXCHANGE,
    PAIR_KEYS,
    REFRESH,
    CountingHasher,
    exchange_ok,
    refresh,
    refresh_ok,
    replaced,
    set_environment,
    simple_credential,
    tenant_credential,
    user_credential,
    verified_claims,
)

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

EXCHANGE_V1 = "/identity/resources/auth/v1/api-token"
INVALID_CLIENT = {"errors": ["Invalid client credentials"]}


# --- success ---------------------------------------------------------------------------------


async def test_tenant_credential_exchanges_for_a_signed_jwt_with_its_claims(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    tenant = await factory.tenant()
    await factory.permission("reports.write")
    role = await factory.role("editor", tenant_id=tenant.id, permission_keys=["reports.write"])
    credential = await tenant_credential(
        client, vendor, tenant.id, role_ids=[role.id], metadata={"env": "prod"}
    )

    now = datetime.now(UTC)
    response = await client.post(EXCHANGE, json=credential.body)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == PAIR_KEYS
    assert pair["expires_in"] == 86400
    assert pair["expires"].endswith("Z")

    claims = await services.keyring.verify(pair["access_token"], EXCHANGE_TOKEN_TYPES, now)
    assert claims == await verified_claims(client, vendor, pair["access_token"])
    assert claims["type"] == "tenantApiToken"
    assert claims["sub"] == credential.client_id
    assert claims["tenantId"] == tenant.id
    assert "userId" not in claims
    assert claims["roles"] == ["editor"]
    assert claims["permissions"] == ["reports.write"]
    assert claims["metadata"] == {"env": "prod"}
    assert claims["createdByUserId"] is None
    assert claims["iss"] == "http://m2m.test"
    assert claims["exp"] - claims["iat"] == 86400
    assert abs(claims["iat"] - now.timestamp()) < 60
    assert uuid.UUID(claims["jti"]).version == 4
    expires = datetime.strptime(pair["expires"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert int(expires.timestamp()) == claims["exp"]


async def test_tenant_credential_carries_its_permissions_and_its_roles_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    await factory.permission("a.direct")
    await factory.permission("b.via-role")
    role = await factory.role("auditor", tenant_id=tenant.id, permission_keys=["b.via-role"])
    [direct_id] = await factory.permission_ids(["a.direct"])
    credential = await tenant_credential(client, vendor, tenant.id, permission_ids=[direct_id])
    # A credential may hold both only through the database: the API gives one or the other.
    await db.execute(
        sa.insert(credential_roles).values(client_id=credential.client_id, role_id=role.id)
    )
    await db.commit()

    pair = await exchange_ok(client, credential)
    claims = await verified_claims(client, vendor, pair["access_token"])
    assert claims["roles"] == ["auditor"]
    assert claims["permissions"] == ["a.direct", "b.via-role"]


async def test_user_credential_carries_the_roles_its_user_holds_in_the_tenant(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    other = await factory.tenant(name="Other")
    await factory.permission("docs.read")
    await factory.permission("docs.admin")
    reader = await factory.role("reader", tenant_id=tenant.id, permission_keys=["docs.read"])
    admin = await factory.role("admin", tenant_id=other.id, permission_keys=["docs.admin"])
    user = await factory.user(tenant.id, roles=[reader])
    credential = await user_credential(client, vendor, tenant.id, user.id, metadata={"k": "v"})
    assert admin.tenant_id == other.id

    pair = await exchange_ok(client, credential)
    claims = await verified_claims(client, vendor, pair["access_token"])
    assert claims["type"] == "userApiToken"
    assert claims["sub"] == credential.client_id
    assert claims["tenantId"] == tenant.id
    assert claims["userId"] == user.id
    assert claims["createdByUserId"] == user.id
    assert claims["roles"] == ["reader"]
    assert claims["permissions"] == ["docs.read"]
    assert claims["metadata"] == {"k": "v"}


async def test_roles_and_permissions_are_resolved_at_exchange_time(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    first = await factory.permission("first.key")
    second = await factory.permission("second.key")
    role = await factory.role("ops", tenant_id=tenant.id, permission_keys=["first.key"])
    credential = await tenant_credential(client, vendor, tenant.id, role_ids=[role.id])
    before = await verified_claims(
        client, vendor, (await exchange_ok(client, credential))["access_token"]
    )
    assert before["permissions"] == ["first.key"]

    response = await client.put(
        f"/identity/resources/roles/v1/{role.id}/permissions",
        headers=vendor,
        json={"permissionIds": [first.id, second.id]},
    )
    assert response.status_code == 200, response.text

    after = await verified_claims(
        client, vendor, (await exchange_ok(client, credential))["access_token"]
    )
    assert after["permissions"] == ["first.key", "second.key"]


async def test_legacy_v1_exchange_answers_in_camel_case(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    response = await client.post(EXCHANGE_V1, json=credential.body)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"accessToken", "refreshToken", "expiresIn", "expires"}
    assert pair["expiresIn"] == 86400
    claims = await services.keyring.verify(
        pair["accessToken"], EXCHANGE_TOKEN_TYPES, datetime.now(UTC)
    )
    assert claims["sub"] == credential.client_id
    assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_jwt_lifetime_follows_default_token_expiration(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    await set_environment(client, vendor, defaultTokenExpiration=600)
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    assert pair["expires_in"] == 600
    claims = await verified_claims(client, vendor, pair["access_token"])
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize("path", [EXCHANGE, EXCHANGE_V1, REFRESH])
async def test_token_responses_are_never_cached(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, path: str
) -> None:
    credential = await simple_credential(client, vendor, factory)
    if path == REFRESH:
        token = (await exchange_ok(client, credential))["refresh_token"]
        response = await refresh(client, token)
    else:
        response = await client.post(path, json=credential.body)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"


async def test_exchange_stores_only_the_hash_of_a_new_refresh_token_family(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    with freeze_time("2030-01-01T00:00:00Z", real_asyncio=True):
        pair = await exchange_ok(client, credential)
    [row] = await refresh_rows(db, credential.client_id)
    assert len(pair["refresh_token"]) >= 43  # 256 bits, URL-safe
    assert row.token_hash == sha256_hex(pair["refresh_token"])
    assert pair["refresh_token"] not in {row.id, row.family_id, row.token_hash}
    assert row.family_id == row.id
    assert row.parent_id is None
    assert row.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert row.expires_at == datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=2592000)
    # Only reuse detection writes audit events on this path.
    assert (
        await db.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.target_id == credential.client_id)
        )
        == 1
    )  # the creation's


# --- refusals --------------------------------------------------------------------------------


async def test_wrong_secret_unknown_client_and_expired_credential_look_the_same(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    live = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    expiring = await tenant_credential(
        client, vendor, tenant.id, permission_ids=[permission.id], expires_in_minutes=1
    )
    attempts = {
        "wrong secret": {"clientId": live.client_id, "secret": "not-the-secret"},
        "unknown client": {"clientId": str(uuid.uuid4()), "secret": live.secret},
    }
    answers = []
    for body in attempts.values():
        response = await client.post(EXCHANGE, json=body)
        answers.append((response.status_code, response.json()))
    with freeze_time(datetime.now(UTC) + timedelta(minutes=2), real_asyncio=True):
        response = await client.post(EXCHANGE, json=expiring.body)
        answers.append((response.status_code, response.json()))
    assert answers == [(401, INVALID_CLIENT)] * 3


async def test_unknown_client_costs_an_argon2_verification_like_a_known_one(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    hasher = CountingHasher()
    with replaced(services, "hasher", hasher):
        wrong = await client.post(
            EXCHANGE, json={"clientId": credential.client_id, "secret": "nope"}
        )
        unknown = await client.post(
            EXCHANGE, json={"clientId": "no-such-client", "secret": credential.secret}
        )
    hasher.close()
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == INVALID_CLIENT
    # The wrong secret was checked against its hash, the unknown client against the dummy.
    assert hasher.verified_stored_hash == [True, False]


async def test_disabled_m2m_refuses_the_exchange_once_the_secret_checks_out(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await set_environment(client, vendor, apiTokensEnabled=False)
    response = await client.post(EXCHANGE, json=credential.body)
    assert response.status_code == 403
    assert response.json() == DISABLED
    wrong = await client.post(EXCHANGE, json={**credential.body, "secret": "wrong"})
    assert (wrong.status_code, wrong.json()) == (401, INVALID_CLIENT)
    assert await refresh_rows(db) == []

    await set_environment(client, vendor, apiTokensEnabled=True)
    await exchange_ok(client, credential)


async def test_deleted_credential_no_longer_exchanges(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await exchange_ok(client, credential)
    response = await client.delete(
        f"/identity/resources/tenants/api-tokens/v1/{credential.client_id}",
        headers={**vendor, "frontegg-tenant-id": credential.tenant_id},
    )
    assert response.status_code == 200, response.text
    response = await client.post(EXCHANGE, json=credential.body)
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)


async def test_a_credential_of_a_deleted_tenant_no_longer_exchanges(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await exchange_ok(client, credential)
    await mark_deleted(db, Tenant, credential.tenant_id)
    response = await client.post(EXCHANGE, json=credential.body)
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    # The credential row is still there, and its secret still matches: only the flag refuses.
    assert await db.get(ClientCredential, credential.client_id) is not None


async def test_a_user_credential_of_a_deleted_user_no_longer_exchanges(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    credential = await user_credential(client, vendor, tenant.id, user.id)
    other_user = await factory.user(tenant.id)
    other = await user_credential(client, vendor, tenant.id, other_user.id)
    await exchange_ok(client, credential)
    await mark_deleted(db, User, user.id)
    response = await client.post(EXCHANGE, json=credential.body)
    assert (response.status_code, response.json()) == (401, INVALID_CLIENT)
    # Another user's credential in the same tenant is untouched.
    await exchange_ok(client, other)


BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("malformed", b"{oops"),
    ("not an object", b"[]"),
    ("missing secret", b'{"clientId": "abc"}'),
    ("number", b'{"clientId": 12, "secret": "s"}'),
    ("empty clientId", b'{"clientId": "", "secret": "s"}'),
    ("unknown field", b'{"clientId": "a", "secret": "s", "admin": true}'),
    ("NUL", b'{"clientId": "a\\u0000", "secret": "s"}'),
    ("huge clientId", b'{"clientId": "' + b"c" * 1025 + b'", "secret": "s"}'),
    ("huge secret", b'{"clientId": "c", "secret": "' + b"s" * 1025 + b'"}'),
]


@pytest.mark.parametrize("path", [EXCHANGE, EXCHANGE_V1])
@pytest.mark.parametrize(("label", "body"), BAD_BODIES, ids=[label for label, _ in BAD_BODIES])
async def test_bad_exchange_input_is_a_400_that_stores_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    services: Services,
    path: str,
    label: str,
    body: bytes,
) -> None:
    hasher = CountingHasher()
    with replaced(services, "hasher", hasher):
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    hasher.close()
    assert response.status_code == 400, (label, response.text)
    errors = response.json()["errors"]
    assert errors
    assert all(isinstance(error, str) and error for error in errors)
    assert hasher.verified_stored_hash == []  # refused before any argon2 work
    assert await refresh_rows(db) == []


# --- the hot path stays lean -----------------------------------------------------------------


@contextmanager
def counted_statements(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(services.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", note)


@pytest.mark.serve_only  # counts PostgreSQL round trips
async def test_exchange_runs_three_statements_and_refresh_two(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    credential = await simple_credential(client, vendor, factory)
    # The prune the exchange enqueues (debounced per credential) is a job, not this request.
    services.prune_debounce.due(credential.client_id, time.monotonic())
    with counted_statements(services) as exchanged:
        pair = await exchange_ok(client, credential)
    # read the hash | lock the credential | make room under the cap, insert and read the grants
    assert exchanged == ["SELECT", "SELECT", "WITH"]
    with counted_statements(services) as refreshed:
        await refresh_ok(client, pair["refresh_token"])
    # lock the credential and consume the token | make room, insert and read the grants
    assert refreshed == ["WITH", "WITH"]
