"""Revoke everything in one call: a credential's refresh tokens, every token of a user or of an
account (README, "Revoke everything"). Immediate everywhere, batched in the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import jobs
from domain.clock import utcnow
from domain.errors import Unauthenticated
from domain.models import AccessToken, AuditEvent, ClientCredential, RefreshToken, Tenant, User
from domain.settings import Settings
from domain.validity import ACCESS_TOKEN_TYPES, CREDENTIAL_TYPES, ValidityCache
from tests.factories import Factory, add_access_token, add_credential, build_world
from tests.steps import (
    EXCHANGE,
    INVALID_REFRESH,
    TENANT_API,
    USER_API,
    api_key,
    bearer,
    configure,
    create_access_token,
    exchange_ok,
    feed_entries,
    finish_jobs,
    refresh,
    tenant_credential,
    until,
    user_credential,
    validate,
)
from tests.suite import both_backends, serve_only

# The same behaviour on serve and dev; what another process sees needs Redis (serve only).
pytestmark = [pytest.mark.usefixtures("fresh_validity_cache"), both_backends]

USERS = "/identity/resources/users/v1"
TENANTS = "/tenants/resources/tenants/v1"


@pytest.fixture
async def other_process(services: Services, settings: Settings) -> AsyncIterator[ValidityCache]:
    """Another API process's validity cache on the same Redis, listening for invalidations."""
    other = ValidityCache(
        redis=services.redis, sessions=services.sessions, prefix=settings.redis_prefix
    )
    await other.start()
    await until(lambda: other.listening, "the other process listens")
    yield other
    await other.close()


async def valid_on(cache: ValidityCache, services: Services, token: str, types: Any) -> bool:
    try:
        await cache.validate(services.keyring, token, types, utcnow())
    except Unauthenticated:
        return False
    return True


async def audit_actions(db: AsyncSession, target_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await db.execute(
        sa.select(AuditEvent.action, AuditEvent.details)
        .where(AuditEvent.target_id == target_id)
        .order_by(AuditEvent.id)
    )
    return [(action, details) for action, details in rows]


# --- a credential's refresh tokens ------------------------------------------------------------


async def test_revoking_a_credentials_refresh_tokens_makes_its_machines_exchange_again(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    credential = await tenant_credential(
        client, vendor, world.tenant.id, role_ids=[world.admin_role.id]
    )
    first = await exchange_ok(client, credential)
    second = await exchange_ok(client, credential)
    in_tenant = {**vendor, "frontegg-tenant-id": world.tenant.id}

    revoked = await client.delete(
        f"{TENANT_API}/{credential.client_id}/refresh-tokens", headers=in_tenant
    )
    refused = [await refresh(client, pair["refresh_token"]) for pair in (first, second)]
    listed = await client.get(TENANT_API, headers=in_tenant)
    exchanged_again = await client.post(EXCHANGE, json=credential.body)
    again = await client.delete(
        f"{TENANT_API}/{credential.client_id}/refresh-tokens", headers=in_tenant
    )

    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revokedRefreshTokens": 2}
    for response in refused:
        assert response.status_code == 401
        assert response.json() == INVALID_REFRESH
    assert [item["clientId"] for item in listed.json()] == [credential.client_id]
    assert exchanged_again.status_code == 200
    assert again.json() == {"revokedRefreshTokens": 1}  # the one the new exchange issued
    # The JWTs already issued live until their exp (README): the credential itself stays.
    assert (await validate(client, bearer(first["access_token"]))).status_code == 200
    actions = await audit_actions(db, credential.client_id)
    assert ("token.updated", {"kind": "tenantApiToken", "revokedRefreshTokens": 2}) in actions


async def test_revoking_a_credentials_refresh_tokens_puts_one_entry_on_the_feed(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    world = await build_world(factory)
    credential = await tenant_credential(
        client, vendor, world.tenant.id, role_ids=[world.admin_role.id]
    )
    for _ in range(3):  # three families: one entry names the credential
        await exchange_ok(client, credential)
    url = f"{TENANT_API}/{credential.client_id}/refresh-tokens"
    in_tenant = {**vendor, "frontegg-tenant-id": world.tenant.id}

    async with feed_entries(services) as published:
        assert (await client.delete(url, headers=in_tenant)).json() == {"revokedRefreshTokens": 3}
        # Nothing left to revoke: nothing to say.
        assert (await client.delete(url, headers=in_tenant)).json() == {"revokedRefreshTokens": 0}

    assert published == [{"type": "refreshTokens", "clientId": credential.client_id}]


async def test_revoking_every_token_is_its_own_feed_entry_with_the_instant_not_a_deletion(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    async with feed_entries(services) as published:
        by_user = await client.delete(f"{USERS}/{world.admin.id}/tokens", headers=vendor)
        by_tenant = await client.delete(f"{TENANTS}/{world.tenant.id}/tokens", headers=vendor)
    assert by_user.status_code == by_tenant.status_code == 200
    user_mark = await db.scalar(sa.select(User.tokens_revoked_at).where(User.id == world.admin.id))
    tenant_mark = await db.scalar(
        sa.select(Tenant.tokens_revoked_at).where(Tenant.id == world.tenant.id)
    )
    # Not `user`/`tenant` (a deletion: every token dead for good), but the instant until which
    # tokens died, the one the rows keep.
    assert [(entry["type"], entry.get("userId"), entry.get("tenantId")) for entry in published] == [
        ("userTokens", world.admin.id, None),
        ("tenantTokens", None, world.tenant.id),
    ]
    assert [datetime.fromisoformat(entry["revokedAt"]) for entry in published] == [
        user_mark,
        tenant_mark,
    ]


async def test_an_owner_revokes_its_own_credentials_refresh_tokens_and_no_one_elses(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    mine = await user_credential(client, vendor, world.tenant.id, world.admin.id)
    colleagues = await user_credential(client, vendor, world.tenant.id, world.colleague.id)
    strangers = await user_credential(client, vendor, world.other_tenant.id, world.stranger.id)
    for credential in (mine, colleagues, strangers):
        await exchange_ok(client, credential)
    reader_role = await factory.role(
        "reader-only", tenant_id=world.tenant.id, permission_keys=["fe.secure.read.userApiTokens"]
    )
    reader = await factory.user(world.tenant.id, roles=[reader_role])
    admin = end_user(world.admin.id, world.tenant.id)

    own = await client.delete(f"{USER_API}/{mine.client_id}/refresh-tokens", headers=admin)
    colleague = await client.delete(
        f"{USER_API}/{colleagues.client_id}/refresh-tokens", headers=admin
    )
    stranger = await client.delete(
        f"{USER_API}/{strangers.client_id}/refresh-tokens", headers=admin
    )
    as_tenant_kind = await client.delete(
        f"{TENANT_API}/{mine.client_id}/refresh-tokens", headers=admin
    )
    without_write = await client.delete(
        f"{USER_API}/{mine.client_id}/refresh-tokens",
        headers=end_user(reader.id, world.tenant.id),
    )

    assert own.status_code == 200
    assert own.json() == {"revokedRefreshTokens": 1}
    for response in (colleague, stranger, as_tenant_kind):
        assert response.status_code == 404, response.text
    assert without_write.status_code == 403
    assert "fe.secure.write.userApiTokens" in without_write.json()["errors"][0]
    usable = await db.execute(
        sa.select(RefreshToken.client_id).where(RefreshToken.revoked_at.is_(None))
    )
    assert sorted(row[0] for row in usable) == sorted([colleagues.client_id, strangers.client_id])


# --- every token of a user --------------------------------------------------------------------


@serve_only  # another API process, through Redis
async def test_revoking_every_token_of_a_user_ends_them_at_once_everywhere_and_keeps_the_user(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    other_process: ValidityCache,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    tenant_id, user_id = world.tenant.id, world.admin.id
    access = await create_access_token(client, vendor, tenant_id, user_id=user_id)
    colleague_access = await create_access_token(
        client, vendor, tenant_id, user_id=world.colleague.id
    )
    account_access = await create_access_token(client, vendor, tenant_id)
    await configure(client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    credential = await user_credential(client, vendor, tenant_id, user_id)
    pair = await exchange_ok(client, credential)
    jwt = pair["access_token"]
    # Both processes hold the tokens as valid before the call.
    for cache in (services.validity, other_process):
        assert await valid_on(cache, services, access["secret"], ACCESS_TOKEN_TYPES)
        assert await valid_on(cache, services, jwt, CREDENTIAL_TYPES)

    called_at = asyncio.get_running_loop().time()
    revoked = await client.delete(f"{USERS}/{user_id}/tokens", headers=vendor)
    here = [
        await validate(client, api_key(access["secret"])),
        await validate(client, bearer(jwt)),
        await client.post(EXCHANGE, json=credential.body),
        await refresh(client, pair["refresh_token"]),
    ]
    await until(lambda: other_process.current_as_of > called_at, "the invalidation arrives")
    there = [
        await valid_on(other_process, services, access["secret"], ACCESS_TOKEN_TYPES),
        await valid_on(other_process, services, jwt, CREDENTIAL_TYPES),
    ]
    as_user = {**vendor, "frontegg-tenant-id": tenant_id, "frontegg-user-id": user_id}
    listed = [
        (await client.get(USER_API, headers=as_user)).json(),
        (await client.get("/identity/resources/users/access-tokens/v1", headers=as_user)).json(),
    ]
    user = await client.get(f"{USERS}/{user_id}", headers=vendor)

    assert revoked.status_code == 200, revoked.text
    body = revoked.json()
    assert (body["accessTokens"], body["clientCredentials"]) == (1, 1)
    assert [response.status_code for response in here] == [401, 401, 401, 401]
    assert there == [False, False]
    assert listed == [[], {"accessTokens": []}]
    assert user.status_code == 200
    for spared in (colleague_access, account_access):
        assert (await validate(client, api_key(spared["secret"]))).status_code == 200
    # The rows are gone once the cascade job ran; the user, and everyone else's, stay.
    await finish_jobs(services)
    assert await db.get(AccessToken, access["id"]) is None
    assert await db.get(ClientCredential, credential.client_id) is None
    assert await db.scalar(sa.select(sa.func.count()).select_from(RefreshToken)) == 0
    assert await db.get(User, user_id) is not None
    assert await db.get(AccessToken, colleague_access["id"]) is not None
    actions = await audit_actions(db, user_id)
    assert actions[-1][0] == "tokens.revoked"
    assert actions[-1][1]["accessTokens"] == 1


@serve_only  # another API process, through Redis
async def test_tokens_made_after_the_revocation_work_and_die_with_the_user_later(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    other_process: ValidityCache,
) -> None:
    world = await build_world(factory)
    tenant_id, user_id = world.tenant.id, world.admin.id
    old = await create_access_token(client, vendor, tenant_id, user_id=user_id)
    assert (await client.delete(f"{USERS}/{user_id}/tokens", headers=vendor)).status_code == 200
    new = await create_access_token(client, vendor, tenant_id, user_id=user_id)

    new_valid = await validate(client, api_key(new["secret"]))
    new_valid_there = await valid_on(other_process, services, new["secret"], ACCESS_TOKEN_TYPES)
    old_refused = await validate(client, api_key(old["secret"]))
    await finish_jobs(services)
    still_valid = await validate(client, api_key(new["secret"]))
    # Deleting the user now names the generation its tokens belong to: the new one dies too.
    called_at = asyncio.get_running_loop().time()
    assert (await client.delete(f"{USERS}/{user_id}", headers=vendor)).status_code == 200
    refused_here = await validate(client, api_key(new["secret"]))
    await until(lambda: other_process.current_as_of > called_at, "the invalidation arrives")
    refused_there = not await valid_on(other_process, services, new["secret"], ACCESS_TOKEN_TYPES)

    assert new_valid.status_code == 200
    assert new_valid_there
    assert old_refused.status_code == 401
    assert still_valid.status_code == 200  # the cascade of the revocation spared it
    assert refused_here.status_code == 401
    assert refused_there


async def test_revoking_a_user_refuses_unknown_users_and_other_accounts_and_end_users(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    token = await create_access_token(client, vendor, world.tenant.id, user_id=world.admin.id)

    unknown = await client.delete(f"{USERS}/nobody/tokens", headers=vendor)
    wrong_tenant = await client.delete(
        f"{USERS}/{world.admin.id}/tokens",
        headers={**vendor, "frontegg-tenant-id": world.other_tenant.id},
    )
    as_end_user = await client.delete(
        f"{USERS}/{world.admin.id}/tokens", headers=end_user(world.admin.id, world.tenant.id)
    )
    unknown_tenant = await client.delete(f"{TENANTS}/nowhere/tokens", headers=vendor)

    assert unknown.status_code == 404
    assert wrong_tenant.status_code == 404
    assert as_end_user.status_code == 401
    assert unknown_tenant.status_code == 404
    assert (await validate(client, api_key(token["secret"]))).status_code == 200
    marks = await db.scalars(sa.select(User.tokens_revoked_at))
    assert set(marks) == {None}


# --- every token of an account ----------------------------------------------------------------


@serve_only  # another API process, through Redis
async def test_revoking_every_token_of_an_account_ends_its_own_and_its_users_tokens_at_once(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    other_process: ValidityCache,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    account = await create_access_token(client, vendor, world.tenant.id)
    personal = await create_access_token(client, vendor, world.tenant.id, user_id=world.admin.id)
    elsewhere = await create_access_token(client, vendor, world.other_tenant.id)
    await configure(client, vendor, machineToMachineAuthStrategy="ClientCredentials")
    credential = await tenant_credential(
        client, vendor, world.tenant.id, role_ids=[world.admin_role.id]
    )
    jwt = (await exchange_ok(client, credential))["access_token"]
    for token in (account, personal):
        assert await valid_on(other_process, services, token["secret"], ACCESS_TOKEN_TYPES)

    called_at = asyncio.get_running_loop().time()
    revoked = await client.delete(f"{TENANTS}/{world.tenant.id}/tokens", headers=vendor)
    here = [
        await validate(client, api_key(account["secret"])),
        await validate(client, api_key(personal["secret"])),
        await validate(client, bearer(jwt)),
        await client.post(EXCHANGE, json=credential.body),
    ]
    await until(lambda: other_process.current_as_of > called_at, "the invalidation arrives")
    there = [
        await valid_on(other_process, services, token["secret"], ACCESS_TOKEN_TYPES)
        for token in (account, personal)
    ]
    active = await client.get(
        "/identity/resources/vendor-only/tenants/access-tokens/v1/active", headers=vendor
    )
    console = await client.get(f"/console/v1/tenants/{world.tenant.id}/tokens", headers=vendor)

    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["accessTokens"], revoked.json()["clientCredentials"]) == (2, 1)
    assert [response.status_code for response in here] == [401, 401, 401, 401]
    assert there == [False, False]
    assert active.json() == [elsewhere["id"]]
    assert console.json()["tokens"] == []
    assert (await validate(client, api_key(elsewhere["secret"]))).status_code == 200
    assert (await db.get(Tenant, world.tenant.id)) is not None
    assert (await client.get(f"{TENANTS}/{world.tenant.id}", headers=vendor)).status_code == 200
    fresh = await create_access_token(client, vendor, world.tenant.id)
    assert (await validate(client, api_key(fresh["secret"]))).status_code == 200


async def test_the_cascade_of_a_revocation_deletes_in_batches_and_a_second_run_finds_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    elsewhere = await factory.tenant()
    other_user = await factory.user(elsewhere.id)
    made_before = utcnow() - timedelta(seconds=1)
    for _ in range(9):
        await add_access_token(sessions, tenant.id, user.id)
        await add_credential(sessions, tenant.id)
    other_token = await add_access_token(sessions, elsewhere.id, other_user.id)
    async with sessions() as session:
        await session.execute(sa.update(AccessToken).values(created_at=made_before))
        await session.execute(sa.update(ClientCredential).values(created_at=made_before))
        await session.commit()
    revoked = await client.delete(f"{TENANTS}/{tenant.id}/tokens", headers=vendor)
    revoked_other = await client.delete(f"{USERS}/{other_user.id}/tokens", headers=vendor)
    kept = await create_access_token(client, vendor, tenant.id)
    context = jobs.JobContext(
        sessions=sessions, validity=services.validity, clock=utcnow, batch_size=4
    )

    first = await jobs.cascade_deletions(context, tenant_id=tenant.id)
    # A run naming one tenant leaves the other revocation to its own run, or to the sweep.
    other_still_there = await db.get(AccessToken, other_token)
    sweep = await jobs.cascade_deletions(context)
    again = await jobs.cascade_deletions(context)

    assert revoked.json()["accessTokens"] == 9
    assert revoked_other.json()["accessTokens"] == 1
    nothing = {
        "users": 0,
        "tenants": 0,
        "access_tokens": 0,
        "credentials": 0,
        "refresh_tokens": 0,
    }
    assert first == {**nothing, "access_tokens": 9, "credentials": 9}
    assert other_still_there is not None
    assert sweep == {**nothing, "access_tokens": 1}
    assert again == nothing
    db.expire_all()
    assert list(await db.scalars(sa.select(AccessToken.id))) == [kept["id"]]
    assert await db.scalar(sa.select(sa.func.count()).select_from(ClientCredential)) == 0
    assert await db.get(User, user.id) is not None
    assert await db.get(User, other_user.id) is not None
