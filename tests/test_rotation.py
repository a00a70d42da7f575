"""Rotation with an overlap (README "Rotation"): a client credential's new secret while the old
one exchanges on for a while, and an access token rolled into a new one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import jobs
from domain.clock import utcnow
from domain.jobs import JobContext
from domain.models import AccessToken, AuditEvent, ClientCredential
from domain.ratelimit import RateLimiter
from domain.rotation import MAX_OVERLAP
from tests.factories import Factory, build_world
from tests.steps import (
    EXCHANGE,
    OAUTH_TOKEN,
    TENANT_ACCESS,
    TENANT_API,
    USER_ACCESS,
    USER_API,
    CountingHasher,
    api_key,
    assert_argon2id_hash_of,
    basic,
    configure,
    create_access_token,
    replaced,
    tenant_credential,
    user_credential,
    validate,
)

INVALID_CLIENT = {"errors": ["Invalid client credentials"]}
LONGEST_MINUTES = int(MAX_OVERLAP.total_seconds() // 60)


def in_tenant(vendor: dict[str, str], tenant_id: str, user_id: str | None = None) -> dict[str, str]:
    headers = {**vendor, "frontegg-tenant-id": tenant_id}
    if user_id is not None:
        headers["frontegg-user-id"] = user_id
    return headers


def at(moment: datetime) -> Any:
    return freeze_time(moment, real_asyncio=True)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def rotate(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, token_id: str, minutes: int
) -> httpx.Response:
    return await client.post(
        f"{path}/{token_id}/rotate", headers=headers, json={"overlapMinutes": minutes}
    )


async def exchange_status(client: httpx.AsyncClient, client_id: str, secret: str) -> int:
    response = await client.post(EXCHANGE, json={"clientId": client_id, "secret": secret})
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        assert response.json() == INVALID_CLIENT
    return response.status_code


async def listed_credential(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, client_id: str
) -> dict[str, Any]:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    [item] = [item for item in response.json() if item["clientId"] == client_id]
    assert isinstance(item, dict)
    return item


async def stored_credential(db: AsyncSession, client_id: str) -> ClientCredential:
    db.expire_all()
    credential = await db.get(ClientCredential, client_id)
    assert credential is not None
    return credential


async def audit_actions(db: AsyncSession, target_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await db.execute(
        sa.select(AuditEvent.action, AuditEvent.details)
        .where(AuditEvent.target_id == target_id)
        .order_by(AuditEvent.id)
    )
    return [(action, details) for action, details in rows]


# --- client credentials: the overlap ------------------------------------------------------------


@pytest.mark.both_backends
async def test_both_secrets_exchange_until_the_overlap_ends_then_only_the_new_one(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    rotated_at = utcnow().replace(microsecond=0) + timedelta(minutes=1)

    with at(rotated_at):
        response = await rotate(client, headers, TENANT_API, old.client_id, 60)
    assert response.status_code == 200, response.text
    body = response.json()
    new_secret = body.pop("secret")
    assert new_secret != old.secret
    assert body["clientId"] == old.client_id
    assert body["permissionIds"] == [permission.id]
    assert body["rotatedAt"] == iso(rotated_at)
    assert body["previousSecretExpires"] == iso(rotated_at + timedelta(minutes=60))
    assert body["previousSecretLastUsedAt"] is None
    assert response.headers["cache-control"] == "no-store"
    stored = await stored_credential(db, old.client_id)
    assert_argon2id_hash_of(stored.secret_hash, new_secret)
    assert stored.previous_secret_hash is not None
    assert_argon2id_hash_of(stored.previous_secret_hash, old.secret)

    listed = await listed_credential(client, headers, TENANT_API, old.client_id)
    assert "secret" not in listed
    assert listed["previousSecretLastUsedAt"] is None  # no machine used the old secret yet
    with at(rotated_at + timedelta(minutes=5)):
        assert await exchange_status(client, old.client_id, new_secret) == 200
    listed = await listed_credential(client, headers, TENANT_API, old.client_id)
    assert listed["previousSecretLastUsedAt"] is None  # the new secret is not the old one
    with at(rotated_at + timedelta(minutes=59, seconds=59)):
        assert await exchange_status(client, old.client_id, old.secret) == 200
    listed = await listed_credential(client, headers, TENANT_API, old.client_id)
    assert listed["previousSecretLastUsedAt"] == iso(rotated_at + timedelta(minutes=59, seconds=59))

    with at(rotated_at + timedelta(minutes=60)):
        assert await exchange_status(client, old.client_id, old.secret) == 401
        assert await exchange_status(client, old.client_id, new_secret) == 200
    assert [action for action, _ in await audit_actions(db, old.client_id)] == [
        "token.created",
        "token.rotated",
    ]
    [(_, details)] = [d for d in await audit_actions(db, old.client_id) if d[0] == "token.rotated"]
    assert details == {
        "kind": "tenantApiToken",
        "overlapMinutes": 60,
        "previousSecretExpires": (rotated_at + timedelta(minutes=60)).isoformat(),
    }
    assert new_secret not in str(details)
    assert old.secret not in str(details)


async def test_a_rotation_without_overlap_ends_the_old_secret_at_once(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    old = await user_credential(client, vendor, world.tenant.id, world.admin.id)
    headers = in_tenant(vendor, world.tenant.id, world.admin.id)
    pair_before = await client.post(EXCHANGE, json=old.body)
    assert pair_before.status_code == 200

    response = await rotate(client, headers, USER_API, old.client_id, 0)
    assert response.status_code == 200, response.text
    new_secret = response.json()["secret"]
    assert set(response.json()) == {
        "clientId",
        "description",
        "metadata",
        "createdAt",
        "expires",
        "rotatedAt",
        "previousSecretExpires",
        "previousSecretLastUsedAt",
        "lastUsedAt",
        "lastUsedFrom",
        "secret",
    }
    assert await exchange_status(client, old.client_id, old.secret) == 401
    assert await exchange_status(client, old.client_id, new_secret) == 200
    assert (await stored_credential(db, old.client_id)).previous_secret_hash is None
    # Refresh tokens issued before the rotation are the credential's, not the secret's.
    refreshed = await client.post(
        "/identity/resources/auth/v2/api-token/token/refresh",
        json={"refreshToken": pair_before.json()["refresh_token"]},
    )
    assert refreshed.status_code == 200, refreshed.text


async def test_ending_the_overlap_early_stops_the_previous_secret_at_once(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    new_secret = (await rotate(client, headers, TENANT_API, old.client_id, 600)).json()["secret"]
    assert await exchange_status(client, old.client_id, old.secret) == 200

    ended_at = utcnow().replace(microsecond=0) + timedelta(minutes=3)
    with at(ended_at):
        response = await client.delete(f"{TENANT_API}/{old.client_id}/rotation", headers=headers)
    assert response.status_code == 200, response.text
    assert "secret" not in response.json()
    assert response.json()["previousSecretExpires"] == iso(ended_at)
    assert response.json()["previousSecretLastUsedAt"] is not None
    assert (await stored_credential(db, old.client_id)).previous_secret_hash is None

    assert await exchange_status(client, old.client_id, old.secret) == 401
    assert await exchange_status(client, old.client_id, new_secret) == 200
    again = await client.delete(f"{TENANT_API}/{old.client_id}/rotation", headers=headers)
    assert again.status_code == 409
    assert again.json() == {
        "errors": [f"Api token {old.client_id} has no rotation overlap running"]
    }
    listed = await listed_credential(client, headers, TENANT_API, old.client_id)
    assert listed["previousSecretExpires"] == iso(ended_at)
    assert [action for action, _ in await audit_actions(db, old.client_id)] == [
        "token.created",
        "token.rotated",
        "token.rotation_ended",
    ]


async def test_a_second_rotation_during_the_overlap_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    new_secret = (await rotate(client, headers, TENANT_API, old.client_id, 60)).json()["secret"]
    before = await stored_credential(db, old.client_id)
    hashes = (before.secret_hash, before.previous_secret_hash, before.previous_secret_expires_at)

    response = await rotate(client, headers, TENANT_API, old.client_id, 60)
    assert response.status_code == 409
    [message] = response.json()["errors"]
    assert "end it before rotating again" in message
    after = await stored_credential(db, old.client_id)
    assert (after.secret_hash, after.previous_secret_hash, after.previous_secret_expires_at) == (
        hashes
    )
    assert await exchange_status(client, old.client_id, old.secret) == 200
    assert await exchange_status(client, old.client_id, new_secret) == 200

    # Once the overlap is over (here: ended), the next rotation is allowed.
    ended = await client.delete(f"{TENANT_API}/{old.client_id}/rotation", headers=headers)
    assert ended.status_code == 200
    third = await rotate(client, headers, TENANT_API, old.client_id, 5)
    assert third.status_code == 200, third.text
    assert await exchange_status(client, old.client_id, old.secret) == 401
    assert await exchange_status(client, old.client_id, new_secret) == 200
    assert await exchange_status(client, old.client_id, third.json()["secret"]) == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"overlapMinutes": -1}, f"overlapMinutes must be from 0 to {LONGEST_MINUTES}"),
        (
            {"overlapMinutes": LONGEST_MINUTES + 1},
            f"overlapMinutes must be from 0 to {LONGEST_MINUTES}",
        ),
        ({"overlapMinutes": 10**30}, None),
        ({"overlapMinutes": "60"}, None),
        ({"overlapMinutes": 1.5}, None),
        ({}, None),
        ({"overlapMinutes": 5, "secret": "mine"}, None),
    ],
)
async def test_an_overlap_outside_0_to_7_days_or_a_malformed_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    body: dict[str, Any],
    error: str | None,
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    before = (await stored_credential(db, old.client_id)).secret_hash

    response = await client.post(f"{TENANT_API}/{old.client_id}/rotate", headers=headers, json=body)
    assert response.status_code == 400, response.text
    assert (
        response.headers["cache-control"] == "no-store"
    )  # as every answer of a route with a secret
    if error is not None:
        assert response.json() == {"errors": [error]}
    after = await stored_credential(db, old.client_id)
    assert after.secret_hash == before
    assert after.rotated_at is None
    assert await exchange_status(client, old.client_id, old.secret) == 200


async def test_the_longest_overlap_is_accepted(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    rotated_at = utcnow().replace(microsecond=0)
    with at(rotated_at):
        response = await rotate(
            client, in_tenant(vendor, tenant.id), TENANT_API, old.client_id, LONGEST_MINUTES
        )
    assert response.status_code == 200, response.text
    assert response.json()["previousSecretExpires"] == iso(rotated_at + timedelta(days=7))


async def test_an_accounts_token_policy_narrows_the_overlap_and_names_its_rule(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    policy = await client.put(
        "/identity/resources/tenants/token-policy/v1",
        headers=headers,
        json={"maxRotationOverlapMinutes": 30},
    )
    assert policy.status_code == 200, policy.text

    refused = await rotate(client, headers, TENANT_API, old.client_id, 31)

    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "errors": [
            "the overlap must be at most 30 minutes in this account"
            " (account token policy: maxRotationOverlapMinutes)"
        ]
    }
    assert (await stored_credential(db, old.client_id)).rotated_at is None
    allowed = await rotate(client, headers, TENANT_API, old.client_id, 30)
    assert allowed.status_code == 200, allowed.text


async def test_the_new_secret_costs_one_argon2_verification_during_the_overlap_a_wrong_one_two(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    response = await rotate(client, in_tenant(vendor, tenant.id), TENANT_API, old.client_id, 60)
    new_secret = response.json()["secret"]

    costs = {}
    for name, secret in (("new", new_secret), ("previous", old.secret), ("wrong", "x" * 43)):
        with replaced(services, "hasher", CountingHasher()) as hasher:
            status = await exchange_status(client, old.client_id, secret)
        costs[name] = (status, hasher.argon2_verifications)
    assert costs == {"new": (200, 1), "previous": (200, 2), "wrong": (401, 2)}


async def test_oauth_clients_authenticate_with_either_secret_during_the_overlap(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    pair = (await client.post(EXCHANGE, json=old.body)).json()
    new_secret = (await rotate(client, headers, TENANT_API, old.client_id, 60)).json()["secret"]

    refreshed = await client.post(
        OAUTH_TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
        headers=basic(old.client_id, old.secret),
    )
    assert refreshed.status_code == 200, refreshed.text
    # Client authentication with the previous secret is a use of it.
    listed = await listed_credential(client, headers, TENANT_API, old.client_id)
    assert listed["previousSecretLastUsedAt"] is not None
    for secret in (old.secret, new_secret):
        granted = await client.post(
            OAUTH_TOKEN,
            data={"grant_type": "client_credentials"},
            headers=basic(old.client_id, secret),
        )
        assert granted.status_code == 200, granted.text

    assert (
        await client.delete(f"{TENANT_API}/{old.client_id}/rotation", headers=headers)
    ).status_code == 200
    refused = await client.post(
        OAUTH_TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(old.client_id, old.secret),
    )
    assert refused.status_code == 401, refused.text


# --- who may rotate -------------------------------------------------------------------------------


async def test_rotation_needs_the_write_permission_of_the_kind_and_stays_in_the_account(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    reader_role = await factory.role(
        "reader-only", tenant_id=world.tenant.id, permission_keys=["fe.secure.read.tenantApiTokens"]
    )
    reader = await factory.user(world.tenant.id, roles=[reader_role])
    permission = await factory.permission()
    credential = await tenant_credential(
        client, vendor, world.tenant.id, permission_ids=[permission.id]
    )
    foreign = await tenant_credential(
        client, vendor, world.other_tenant.id, permission_ids=[permission.id]
    )
    colleague_own = await user_credential(client, vendor, world.tenant.id, world.colleague.id)

    refused = await rotate(
        client, end_user(reader.id, world.tenant.id), TENANT_API, credential.client_id, 5
    )
    assert refused.status_code == 403
    assert refused.json() == {"errors": ["Missing permission fe.secure.write.tenantApiTokens"]}
    ending = await client.delete(
        f"{TENANT_API}/{credential.client_id}/rotation",
        headers=end_user(reader.id, world.tenant.id),
    )
    assert ending.status_code == 403
    admin = end_user(world.admin.id, world.tenant.id)
    assert (await rotate(client, admin, TENANT_API, foreign.client_id, 5)).status_code == 404
    # A user's personal credentials are its own: a colleague's is not found.
    assert (await rotate(client, admin, USER_API, colleague_own.client_id, 5)).status_code == 404
    for unchanged in (credential, foreign, colleague_own):
        assert (await stored_credential(db, unchanged.client_id)).rotated_at is None

    allowed = await rotate(client, admin, TENANT_API, credential.client_id, 5)
    assert allowed.status_code == 200, allowed.text
    own = await rotate(
        client,
        end_user(world.colleague.id, world.tenant.id),
        USER_API,
        colleague_own.client_id,
        5,
    )
    assert own.status_code == 200, own.text
    # The vendor rotates anything it names.
    by_vendor = await rotate(
        client, in_tenant(vendor, world.other_tenant.id), TENANT_API, foreign.client_id, 5
    )
    assert by_vendor.status_code == 200, by_vendor.text
    unknown = await rotate(client, in_tenant(vendor, world.tenant.id), TENANT_API, "nope", 5)
    assert unknown.status_code == 404


# --- access tokens: the roll ----------------------------------------------------------------------


def job_context(services: Services, sessions: async_sessionmaker[AsyncSession]) -> JobContext:
    return JobContext(sessions=sessions, validity=services.validity, clock=utcnow)


async def test_a_rolled_access_token_validates_for_the_overlap_then_the_expiry_job_deletes_it(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    await factory.permission("reports.read")
    role = await factory.role("viewer", tenant_id=tenant.id, permission_keys=["reports.read"])
    old = await create_access_token(client, vendor, tenant.id, role_ids=[role.id], minutes=600)
    headers = in_tenant(vendor, tenant.id)
    assert (await validate(client, api_key(old["secret"]))).status_code == 200  # cached now
    rolled_at = utcnow().replace(microsecond=0) + timedelta(minutes=1)

    with at(rolled_at):
        response = await rotate(client, headers, TENANT_ACCESS, old["id"], 30)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old["id"]
    assert new["secret"] != old["secret"]
    assert new["description"] == old["description"]
    assert new["roleIds"] == [role.id]
    assert new["expires"] == old["expires"]
    assert new["replacedBy"] is None
    assert response.headers["cache-control"] == "no-store"
    listed = (await client.get(TENANT_ACCESS, headers=headers)).json()["accessTokens"]
    [listed_old] = [item for item in listed if item["id"] == old["id"]]
    assert listed_old["replacedBy"] == new["id"]
    assert listed_old["expires"] == iso(rolled_at + timedelta(minutes=30))

    with at(rolled_at + timedelta(minutes=29)):
        for token in (old, new):
            answer = await validate(client, api_key(token["secret"]))
            assert answer.status_code == 200, answer.text
            assert answer.json()["roles"] == ["viewer"]
    with at(rolled_at + timedelta(minutes=30)):
        assert (await validate(client, api_key(old["secret"]))).status_code == 401
        assert (await validate(client, api_key(new["secret"]))).status_code == 200
        await jobs.expire_tokens(job_context(services, sessions))
    db.expire_all()
    assert await db.get(AccessToken, old["id"]) is None
    assert await db.get(AccessToken, new["id"]) is not None
    listed = (await client.get(TENANT_ACCESS, headers=headers)).json()["accessTokens"]
    assert [item["id"] for item in listed] == [new["id"]]
    assert (await validate(client, api_key(old["secret"]))).status_code == 401
    actions = [action for action, _ in await audit_actions(db, old["id"])]
    assert actions == ["token.created", "token.rotated", "access_token.expired"]
    assert [action for action, _ in await audit_actions(db, new["id"])] == ["token.created"]


async def test_rolling_without_overlap_deletes_the_old_token_at_once_and_a_second_roll_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    old = await create_access_token(client, vendor, world.tenant.id, user_id=world.admin.id)
    headers = in_tenant(vendor, world.tenant.id, world.admin.id)
    assert (await validate(client, api_key(old["secret"]))).status_code == 200  # cached now

    response = await rotate(client, headers, USER_ACCESS, old["id"], 0)
    assert response.status_code == 201, response.text
    new = response.json()
    assert set(new) == {
        "id",
        "description",
        "createdAt",
        "expires",
        "replacedBy",
        "lastUsedAt",
        "lastUsedFrom",
        "secret",
    }
    assert new["expires"] is None
    assert (await validate(client, api_key(old["secret"]))).status_code == 401
    assert (await validate(client, api_key(new["secret"]))).status_code == 200
    assert await db.get(AccessToken, old["id"]) is None
    assert (await rotate(client, headers, USER_ACCESS, old["id"], 0)).status_code == 404

    kept = await rotate(client, headers, USER_ACCESS, new["id"], 10)
    assert kept.status_code == 201
    again = await rotate(client, headers, USER_ACCESS, new["id"], 10)
    assert again.status_code == 409
    assert again.json() == {
        "errors": [f"Access token {new['id']} was already rolled into {kept.json()['id']}"]
    }
    db.expire_all()
    assert (
        len(
            list(
                await db.scalars(
                    sa.select(AccessToken).where(AccessToken.user_id == world.admin.id)
                )
            )
        )
        == 2
    )


POLICY = "/identity/resources/tenants/token-policy/v1"


async def test_a_roll_keeps_the_expiry_only_within_the_accounts_token_policy(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    # The new token keeps the old one's expiry: the policy judges that expiry as it judges a
    # creation's, measured from the roll.
    tenant = await factory.tenant()
    headers = in_tenant(vendor, tenant.id)
    never = await create_access_token(client, vendor, tenant.id)
    far = await create_access_token(client, vendor, tenant.id, minutes=10 * 1440)
    near = await create_access_token(client, vendor, tenant.id, minutes=3 * 1440)

    required = await client.put(POLICY, headers=headers, json={"requireExpiration": True})
    assert required.status_code == 200, required.text
    refused = await rotate(client, headers, TENANT_ACCESS, never["id"], 60)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "errors": [
            "this token never expires, but tokens of this account must expire; a rolled token"
            " keeps its expiry: create a new token instead"
            " (account token policy: requireExpiration)"
        ]
    }

    longest = await client.put(POLICY, headers=headers, json={"maxExpiresInMinutes": 7 * 1440})
    assert longest.status_code == 200, longest.text
    for token, message in [
        (
            never,
            f"this token never expires, but tokens of this account expire within {7 * 1440}"
            " minutes",
        ),
        (far, f"this token expires more than {7 * 1440} minutes from now, the longest this"),
    ]:
        refused = await rotate(client, headers, TENANT_ACCESS, token["id"], 60)
        assert refused.status_code == 400, refused.text
        (error,) = refused.json()["errors"]
        assert error.startswith(message), error
        assert error.endswith("(account token policy: maxExpiresInMinutes)")

    # Nothing changed for the refused: no new token, the old ones untouched and not rolled.
    db.expire_all()
    stored = {row.id: row for row in await db.scalars(sa.select(AccessToken))}
    assert set(stored) >= {never["id"], far["id"], near["id"]}
    assert len([row for row in stored.values() if row.tenant_id == tenant.id]) == 3
    assert stored[never["id"]].expires_at is None
    assert stored[never["id"]].replaced_by_id is None
    assert iso(stored[far["id"]].expires_at) == far["expires"]  # type: ignore[arg-type]
    assert stored[far["id"]].replaced_by_id is None
    assert [action for action, _ in await audit_actions(db, far["id"])] == ["token.created"]

    allowed = await rotate(client, headers, TENANT_ACCESS, near["id"], 60)
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["expires"] == near["expires"]


async def test_a_roll_is_not_held_to_the_token_cap_and_the_old_token_counts_until_its_overlap_ends(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    headers = in_tenant(vendor, tenant.id)
    old = await create_access_token(client, vendor, tenant.id)
    capped = await client.put(POLICY, headers=headers, json={"maxTokens": {"tenantAccessToken": 1}})
    assert capped.status_code == 200, capped.text
    rolled_at = utcnow().replace(microsecond=0) + timedelta(minutes=1)

    with at(rolled_at):
        rolled = await rotate(client, headers, TENANT_ACCESS, old["id"], 30)
        assert rolled.status_code == 201, rolled.text
        # During the overlap both tokens work, so both count: no room for another.
        during = await client.post(TENANT_ACCESS, headers=headers, json={"roleIds": []})
    assert during.status_code == 400, during.text
    assert during.json()["errors"][0].endswith(
        "(account token policy: maxTokens.tenantAccessToken)"
    )
    with at(rolled_at + timedelta(minutes=30)):
        # The old token has stopped: only the new one counts, and it fills the cap.
        after = await client.post(TENANT_ACCESS, headers=headers, json={"roleIds": []})
        again = await rotate(client, headers, TENANT_ACCESS, rolled.json()["id"], 0)
    assert after.status_code == 400, after.text
    assert again.status_code == 201, again.text


async def test_rolling_an_access_token_needs_the_right_to_give_its_roles(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    end_user: Any,
    db: AsyncSession,
) -> None:
    world = await build_world(factory)
    await factory.permission("billing.admin")
    billing = await factory.role(
        "billing", tenant_id=world.tenant.id, permission_keys=["billing.admin"]
    )
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    old = await create_access_token(client, vendor, world.tenant.id, role_ids=[billing.id])

    # The admin may write account tokens but does not hold the role the token carries.
    response = await rotate(
        client, end_user(world.admin.id, world.tenant.id), TENANT_ACCESS, old["id"], 5
    )
    assert response.status_code == 403, response.text
    db.expire_all()
    stored = await db.get(AccessToken, old["id"])
    assert stored is not None
    assert (stored.replaced_by_id, stored.expires_at) == (None, None)
    assert (await validate(client, api_key(old["secret"]))).status_code == 200


# --- under concurrency --------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    """An exchange, when it was sent and when its answer came back (the loop's clock)."""

    secret: str
    sent: float
    answered: float
    status: int


async def test_concurrent_exchanges_during_a_rotation_and_its_early_end_stay_inside_their_windows(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    generous_limits: RateLimiter,
) -> None:
    tenant = await factory.tenant()
    permission = await factory.permission()
    old = await tenant_credential(client, vendor, tenant.id, permission_ids=[permission.id])
    headers = in_tenant(vendor, tenant.id)
    loop = asyncio.get_running_loop()

    async def amid_exchanges(
        secrets: list[str], change: Any, workers: int = 6, before: int = 12, after: int = 12
    ) -> tuple[float, float, httpx.Response, list[Timed]]:
        """Workers exchange the secrets in turn without pause; `change` is sent once `before`
        exchanges have been answered, and they stop once `after` more were sent after its
        answer. Its send and answer times, its response, and every exchange."""
        answered: list[Timed] = []
        started = asyncio.Event()
        changed: list[tuple[float, float, httpx.Response]] = []

        async def worker(offset: int) -> None:
            turn = offset
            while not changed or sum(t.sent > changed[0][1] for t in answered) < after:
                secret = secrets[turn % len(secrets)]
                turn += 1
                sent = loop.time()
                response = await client.post(
                    EXCHANGE, json={"clientId": old.client_id, "secret": secret}
                )
                answered.append(Timed(secret, sent, loop.time(), response.status_code))
                if len(answered) >= before:
                    started.set()

        async def changer() -> None:
            await started.wait()
            sent = loop.time()
            response = await change()
            changed.append((sent, loop.time(), response))

        await asyncio.gather(changer(), *(worker(i) for i in range(workers)))
        [(sent, done, response)] = changed
        return sent, done, response, answered

    # 1. The rotation, amid exchanges with the old secret: it is inside its window throughout
    # (the current secret before the commit, the previous one after), so every one succeeds.
    _, _, rotated, during_rotation = await amid_exchanges(
        [old.secret], lambda: rotate(client, headers, TENANT_API, old.client_id, 60)
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert {timed.status for timed in during_rotation} == {200}

    # 2. The early end, amid exchanges with both secrets. The new secret is inside its window
    # throughout; the old one until the end commits, outside it once the end has answered.
    end_sent, end_answered, ended, during_end = await amid_exchanges(
        [old.secret, new_secret],
        lambda: client.delete(f"{TENANT_API}/{old.client_id}/rotation", headers=headers),
    )
    assert ended.status_code == 200, ended.text

    assert all(timed.status in (200, 401) for timed in during_end)  # no 5xx, no 429
    assert {timed.status for timed in during_end if timed.secret == new_secret} == {200}
    old_ones = [timed for timed in during_end if timed.secret == old.secret]
    for timed in old_ones:
        if timed.sent > end_answered:
            assert timed.status == 401, "the previous secret exchanged after its overlap ended"
        if timed.answered < end_sent:
            assert timed.status == 200, "the previous secret was refused inside its overlap"
    # The race was real: old-secret exchanges answered before the end, and sent after it.
    assert any(timed.answered < end_sent for timed in old_ones)
    assert any(timed.sent > end_answered for timed in old_ones)
