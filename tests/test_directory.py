"""Directory: what holds for every route (vendor only, bounded input), cascades and races."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.state import Services
from domain import directory
from domain.auth import VENDOR
from domain.clock import utcnow
from domain.errors import Conflict
from domain.models import (
    AccessToken,
    AuditEvent,
    ClientCredential,
    Permission,
    RefreshToken,
    Role,
    Tenant,
    User,
    access_token_roles,
    credential_roles,
    user_roles,
)
from tests.factories import Factory
from tests.steps import finish_jobs

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

TENANTS = "/tenants/resources/tenants/v1"
USERS_V2 = "/identity/resources/users/v2"
USERS = "/identity/resources/users/v1"
ROLES = "/identity/resources/roles/v1"
PERMISSIONS = "/identity/resources/permissions/v1"

# Every directory route, with a body that would succeed for the vendor.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", TENANTS, {"tenantId": "acme", "name": "Acme"}),
    ("GET", TENANTS, None),
    ("GET", f"{TENANTS}/acme", None),
    ("DELETE", f"{TENANTS}/acme", None),
    ("POST", USERS_V2, {"email": "ada@example.com"}),
    ("GET", f"{USERS}/u-1", None),
    ("DELETE", f"{USERS}/u-1", None),
    ("POST", f"{USERS}/u-1/roles", {"roleIds": ["r"]}),
    ("GET", ROLES, None),
    ("POST", ROLES, [{"key": "admin", "name": "Admin", "level": 0}]),
    ("PATCH", f"{ROLES}/r", {"name": "X"}),
    ("DELETE", f"{ROLES}/r", None),
    ("PUT", f"{ROLES}/r/permissions", {"permissionIds": []}),
    ("GET", PERMISSIONS, None),
    ("POST", PERMISSIONS, [{"key": "reports.read", "name": "Read reports"}]),
]


async def stored_counts(db: AsyncSession) -> dict[str, int]:
    counts = {}
    for model in (Tenant, User, Role, AuditEvent):
        counts[model.__tablename__] = await db.scalar(sa.select(sa.func.count()).select_from(model))
    counts["custom permissions"] = await db.scalar(
        sa.select(sa.func.count()).where(Permission.fe_permission.is_(False))
    )
    return counts


# --- vendor only ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_directory_route_needs_a_vendor_token(
    client: httpx.AsyncClient,
    db: AsyncSession,
    factory: Factory,
    end_user: Any,
    method: str,
    path: str,
    body: Any,
) -> None:
    await factory.tenant("acme")
    await factory.user("acme", user_id="u-1")
    end_user_headers = end_user("u-1", "acme")
    before = await stored_counts(db)
    attempts = [
        ({}, "Missing vendor token"),
        ({"x-access-token": "not-a-token"}, "Invalid or expired vendor token"),
        ({"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJ0eXBlIjoidmVuZG9yIn0."}, None),
        (end_user_headers, "Invalid or expired vendor token"),
    ]
    for headers, error in attempts:
        response = await client.request(
            method, path, headers={**headers, "frontegg-tenant-id": "acme"}, json=body
        )
        assert response.status_code == 401, (headers, response.text)
        assert response.json() == {"errors": [error or "Invalid or expired vendor token"]}
    assert await stored_counts(db) == before


# --- bounded input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for method, path, body in ROUTES if body is not None],
)
async def test_malformed_or_oversized_bodies_are_refused_on_every_route(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    method: str,
    path: str,
) -> None:
    await factory.tenant("acme")
    await factory.user("acme", user_id="u-1")
    headers = {**vendor, "frontegg-tenant-id": "acme", "content-type": "application/json"}
    before = await stored_counts(db)

    malformed = await client.request(method, path, headers=headers, content=b'{"name": "x",')
    nul_byte = await client.request(method, path, headers=headers, content=b'{"name": "a\\u0000"}')
    oversized = await client.request(
        method, path, headers=headers, content=b'[{"name": "' + b"x" * 200_000 + b'"}]'
    )

    for response in (malformed, nul_byte):
        assert response.status_code == 400, response.text
        assert response.json()["errors"]
    assert oversized.status_code == 413
    assert oversized.json()["errors"]
    assert await stored_counts(db) == before


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("POST", "/roles")],
)
async def test_user_ids_too_long_for_the_path_are_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], method: str, suffix: str
) -> None:
    response = await client.request(
        method,
        f"{USERS}/{'u' * 10_000}{suffix}",
        headers={**vendor, "frontegg-tenant-id": "acme"},
        json={"roleIds": ["r"]} if method == "POST" else None,
    )
    assert response.status_code == 400
    assert response.json()["errors"]


async def test_a_tenant_header_too_long_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        ROLES,
        headers={**vendor, "frontegg-tenant-id": "t" * 10_000},
        json=[{"key": "a", "name": "A", "level": 0}],
    )
    assert response.status_code == 400
    assert await db.scalar(sa.select(sa.func.count()).select_from(Role)) == 0


# --- cascades ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    access_token_id: str
    client_id: str
    refresh_token_id: str


async def issue_tokens(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    user_id: str | None = None,
    roles: tuple[Role, ...] = (),
) -> Tokens:
    """Token rows as the token routes would store them: an access token and a credential."""
    now = utcnow()
    tokens = Tokens(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))
    async with sessions() as session:
        session.add(
            AccessToken(
                id=tokens.access_token_id,
                tenant_id=tenant_id,
                user_id=user_id,
                created_by_user_id=user_id,
                description=None,
                expires_at=None,
                created_at=now,
            )
        )
        session.add(
            ClientCredential(
                client_id=tokens.client_id,
                tenant_id=tenant_id,
                user_id=user_id,
                created_by_user_id=user_id,
                description=None,
                metadata_json={},
                secret_hash="$argon2id$not-a-real-hash",
                expires_at=None,
                created_at=now,
                updated_at=now,
            )
        )
        await session.flush()
        session.add(
            RefreshToken(
                id=tokens.refresh_token_id,
                client_id=tokens.client_id,
                token_hash=uuid.uuid4().hex * 2,
                parent_id=None,
                family_id=tokens.refresh_token_id,
                created_at=now,
                expires_at=now + timedelta(days=30),
                used_at=None,
                revoked_at=None,
            )
        )
        for role in roles:
            await session.execute(
                sa.insert(access_token_roles).values(
                    token_id=tokens.access_token_id, role_id=role.id
                )
            )
            await session.execute(
                sa.insert(credential_roles).values(client_id=tokens.client_id, role_id=role.id)
            )
        await session.commit()
    return tokens


async def surviving(db: AsyncSession, tokens: Tokens) -> tuple[bool, bool, bool]:
    return (
        await db.get(AccessToken, tokens.access_token_id) is not None,
        await db.get(ClientCredential, tokens.client_id) is not None,
        await db.get(RefreshToken, tokens.refresh_token_id) is not None,
    )


async def test_deleting_a_tenant_deletes_its_users_roles_and_every_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    services: Services,
) -> None:
    await factory.tenant("acme")
    await factory.tenant("other")
    env_role = await factory.role("admin")
    acme_role = await factory.role("acme-admin", tenant_id="acme")
    other_role = await factory.role("other-admin", tenant_id="other")
    await factory.user("acme", user_id="a-1", roles=[env_role, acme_role])
    await factory.user("other", user_id="o-1", roles=[env_role, other_role])
    acme_user_tokens = await issue_tokens(sessions, "acme", "a-1")
    acme_tenant_tokens = await issue_tokens(sessions, "acme", roles=(acme_role,))
    other_tokens = await issue_tokens(sessions, "other", "o-1", roles=(other_role,))

    response = await client.delete(f"{TENANTS}/acme", headers=vendor)
    await finish_jobs(services)

    assert response.status_code == 200
    assert await surviving(db, acme_user_tokens) == (False, False, False)
    assert await surviving(db, acme_tenant_tokens) == (False, False, False)
    assert await surviving(db, other_tokens) == (True, True, True)
    assert list(await db.scalars(sa.select(User.id))) == ["o-1"]
    assert {r.key for r in await db.scalars(sa.select(Role))} == {"admin", "other-admin"}
    assert set(await db.scalars(sa.select(user_roles.c.user_id))) == {"o-1"}


async def test_deleting_a_user_deletes_its_tokens_credentials_and_refresh_tokens_only(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    services: Services,
) -> None:
    await factory.tenant("acme")
    await factory.user("acme", user_id="u-1")
    await factory.user("acme", user_id="u-2")
    doomed = await issue_tokens(sessions, "acme", "u-1")
    colleague = await issue_tokens(sessions, "acme", "u-2")
    tenant_tokens = await issue_tokens(sessions, "acme")

    response = await client.delete(f"{USERS}/u-1", headers=vendor)
    await finish_jobs(services)

    assert response.status_code == 200
    assert await surviving(db, doomed) == (False, False, False)
    assert await surviving(db, colleague) == (True, True, True)
    assert await surviving(db, tenant_tokens) == (True, True, True)


async def test_deleting_a_role_takes_it_from_tokens_that_carried_it(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await factory.tenant("acme")
    doomed = await factory.role("doomed")
    kept = await factory.role("kept")
    tokens = await issue_tokens(sessions, "acme", roles=(doomed, kept))

    response = await client.delete(f"{ROLES}/{doomed.id}", headers=vendor)

    assert response.status_code == 204
    assert await surviving(db, tokens) == (True, True, True)
    assert list(await db.scalars(sa.select(access_token_roles.c.role_id))) == [kept.id]
    assert list(await db.scalars(sa.select(credential_roles.c.role_id))) == [kept.id]


# --- races ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tenant_header", "body", "model"),
    [
        (TENANTS, None, {"tenantId": "race", "name": "Race"}, Tenant),
        (USERS_V2, "acme", {"email": "race@example.com"}, User),
        (ROLES, None, [{"key": "race", "name": "Race", "level": 0}], Role),
        (ROLES, "acme", [{"key": "race", "name": "Race", "level": 0}], Role),
        (PERMISSIONS, None, [{"key": "race", "name": "Race"}], Permission),
    ],
)
async def test_two_concurrent_identical_creates_give_one_201_and_one_409(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    factory: Factory,
    path: str,
    tenant_header: str | None,
    body: Any,
    model: type[Any],
) -> None:
    await factory.tenant("acme")
    headers = {**vendor, **({"frontegg-tenant-id": tenant_header} if tenant_header else {})}

    responses = await asyncio.gather(
        client.post(path, headers=headers, json=body),
        client.post(path, headers=headers, json=body),
    )

    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json()["errors"]
    created = select_created(model)
    assert await db.scalar(sa.select(sa.func.count()).select_from(created.subquery())) == 1


def select_created(model: type[Any]) -> sa.Select[Any]:
    if model is Tenant:
        return sa.select(Tenant).where(Tenant.id == "race")
    if model is User:
        return sa.select(User).where(User.email == "race@example.com")
    if model is Role:
        return sa.select(Role).where(Role.key == "race")
    return sa.select(Permission).where(Permission.key == "race")


async def wait_until_a_query_waits_on_a_lock(engine: AsyncEngine) -> None:
    """Poll PostgreSQL (no sleeping) until some session of this database waits on a lock."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for _ in range(5_000):
            waiting = await autocommit.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            if waiting:
                return
    pytest.fail("the second create never waited on the first one's row")


# Each create is run twice, in tenants "acme" then "other", with the same unique key: the
# user's email is unique across tenants, so even the per-tenant lock does not serialize them.
CREATES: dict[str, Callable[[AsyncSession, str], Awaitable[object]]] = {
    "tenant": lambda s, _: directory.create_tenant(s, VENDOR, "race", "Race", utcnow()),
    "user": lambda s, tenant_id: directory.create_user(
        s, VENDOR, tenant_id, directory.NewUser(email="race@example.com"), utcnow()
    ),
    "role": lambda s, _: directory.create_roles(
        s, VENDOR, None, [directory.NewRole(key="race", name="Race", level=0)], utcnow()
    ),
    "permission": lambda s, _: directory.create_permissions(
        s, VENDOR, [directory.NewPermission(key="race", name="Race")], utcnow()
    ),
}


@pytest.mark.serve_only  # watches PostgreSQL's lock waits; SQLite serializes writers
@pytest.mark.parametrize("kind", sorted(CREATES))
async def test_a_create_that_loses_the_race_at_the_unique_index_is_a_conflict(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    db: AsyncSession,
    factory: Factory,
    kind: str,
) -> None:
    """Both pass the up-front check; the database's unique index decides, and says 409."""
    await factory.tenant("acme")
    await factory.tenant("other")
    create = CREATES[kind]
    async with sessions() as first, sessions() as second:
        await create(first, "acme")  # flushed, not committed: the second cannot see it yet
        loser = asyncio.create_task(create(second, "other"))
        await wait_until_a_query_waits_on_a_lock(engine)
        await first.commit()
        with pytest.raises(Conflict):
            await loser
    actions = list(await db.scalars(sa.select(AuditEvent.action)))
    assert len(actions) == 1
