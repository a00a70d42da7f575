"""POST /leaks: a leaked value reported by the vendor (README "Leaked secrets"): under the
`revoke` policy what it stands for ends everywhere at once, under `notify` it is only recorded;
a value not ours, dead or malformed changes nothing; the same leak acts once."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.models import AuditEvent, ClientCredential, LeakReport, RefreshToken
from domain.secrets import SecretShape, new_secret
from domain.settings import ConfigError, load_settings
from tests.factories import Factory, build_world
from tests.steps import (
    EXCHANGE,
    INVALID_REFRESH,
    api_key,
    bearer,
    create_access_token,
    exchange_ok,
    feed_entries,
    refresh,
    refresh_ok,
    replaced,
    simple_credential,
    user_credential,
    validate,
)
from tests.suite import VALID
from tests.test_secret_shape import wrong_checksum

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

LEAKS = "/leaks"
TENANT_API_TOKENS = "/identity/resources/tenants/api-tokens/v1"
SOURCE_URL = "https://github.com/acme/app/blob/abc123/config.py"
INVALID_CLIENT = {"errors": ["Invalid client credentials"]}


async def report(
    client: httpx.AsyncClient, vendor: dict[str, str], token: str, **where: str
) -> dict[str, Any]:
    response = await client.post(LEAKS, headers=vendor, json={"token": token, **where})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = response.json()
    assert set(answer) == {"outcome", "label", "kind", "message"}
    return answer


async def leak_events(db: AsyncSession) -> list[AuditEvent]:
    return list(
        await db.scalars(
            sa.select(AuditEvent).where(AuditEvent.action.like("leak.%")).order_by(AuditEvent.id)
        )
    )


# --- revoke (the default policy) --------------------------------------------------------------


async def test_a_leaked_client_secret_deletes_its_credential_its_refresh_tokens_and_jwts(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    assert (await validate(client, bearer(pair["access_token"]))).status_code == 200

    answer = await report(client, vendor, credential.secret, url=SOURCE_URL, source="commit")

    assert answer == {
        "outcome": "revoked",
        "label": "true_positive",
        "kind": "client_secret",
        "message": "Revoked: the leaked client secret no longer works",
    }
    # Refused at once everywhere: the JWT it issued, its refresh token, the secret itself.
    assert (await validate(client, bearer(pair["access_token"]))).status_code == 401
    assert (await refresh(client, pair["refresh_token"])).json() == INVALID_REFRESH
    assert (await client.post(EXCHANGE, json=credential.body)).json() == INVALID_CLIENT
    stored = await db.scalar(
        sa.select(sa.func.count())
        .select_from(ClientCredential)
        .where(ClientCredential.client_id == credential.client_id)
    )
    tokens = await db.scalar(
        sa.select(sa.func.count())
        .select_from(RefreshToken)
        .where(RefreshToken.client_id == credential.client_id)
    )
    assert (stored, tokens) == (0, 0)
    (event,) = await leak_events(db)
    assert event.action == "leak.revoked"
    assert (event.target_type, event.target_id) == ("client_credential", credential.client_id)
    assert event.tenant_id == credential.tenant_id
    assert event.actor_type == "vendor"
    assert event.details == {
        "kind": "client_secret",
        "reporter": "vendor",
        "url": SOURCE_URL,
        "source": "commit",
        "policy": "revoke",
    }
    assert credential.secret not in str(event.details)


async def test_a_leaked_previous_secret_during_a_rotation_overlap_deletes_its_credential(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    rotated = await client.post(
        f"{TENANT_API_TOKENS}/{credential.client_id}/rotate",
        headers={**vendor, "frontegg-tenant-id": credential.tenant_id},
        json={"overlapMinutes": 60},
    )
    assert rotated.status_code == 200, rotated.text
    new_secret_body = {"clientId": credential.client_id, "secret": rotated.json()["secret"]}
    # Both secrets exchange during the overlap; the previous one is what leaked.
    assert (await client.post(EXCHANGE, json=credential.body)).status_code == 200

    answer = await report(client, vendor, credential.secret, url=SOURCE_URL)

    assert (answer["outcome"], answer["kind"]) == ("revoked", "client_secret")
    assert (await client.post(EXCHANGE, json=credential.body)).json() == INVALID_CLIENT
    assert (await client.post(EXCHANGE, json=new_secret_body)).json() == INVALID_CLIENT
    stored = await db.scalar(
        sa.select(sa.func.count())
        .select_from(ClientCredential)
        .where(ClientCredential.client_id == credential.client_id)
    )
    assert stored == 0


async def test_the_same_leak_reported_again_acts_once_and_says_so(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    first = await report(client, vendor, credential.secret, url=SOURCE_URL)
    again = await report(client, vendor, credential.secret, url=SOURCE_URL + "#2")

    assert first["outcome"] == "revoked"
    assert again["outcome"] == "already_reported"
    assert again["label"] == "false_positive"  # no longer live when reported
    assert "nothing changed" in again["message"]
    assert len(await leak_events(db)) == 1


async def test_concurrent_reports_of_one_leak_act_once(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    answers = await asyncio.gather(
        *(report(client, vendor, credential.secret, url=SOURCE_URL) for _ in range(6))
    )
    outcomes = sorted(answer["outcome"] for answer in answers)
    assert outcomes.count("revoked") == 1
    assert set(outcomes) <= {"revoked", "already_reported"}
    assert len(await leak_events(db)) == 1
    assert await db.scalar(sa.select(sa.func.count()).select_from(LeakReport)) == 1
    assert (await validate(client, bearer(pair["access_token"]))).status_code == 401


async def test_a_leaked_refresh_token_revokes_its_family_only(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    leaked_family = await exchange_ok(client, credential)
    rotated = await refresh_ok(client, leaked_family["refresh_token"])
    other_family = await exchange_ok(client, credential)

    async with feed_entries(services) as published:
        answer = await report(client, vendor, rotated["refresh_token"], url=SOURCE_URL)

    assert answer["outcome"] == "revoked"
    assert answer["kind"] == "refresh_token"
    assert (await refresh(client, rotated["refresh_token"])).json() == INVALID_REFRESH
    await refresh_ok(client, other_family["refresh_token"])  # another family goes on
    await exchange_ok(client, credential)  # the credential stays
    (event,) = await leak_events(db)
    family_id = await db.scalar(
        sa.select(RefreshToken.family_id).where(RefreshToken.parent_id.is_not(None)).limit(1)
    )
    assert (event.target_type, event.target_id) == ("refresh_token_family", family_id)
    assert event.details["url"] == SOURCE_URL
    # Filed under the family, found by its credential (README "Audit trail": tokenId).
    assert event.details["clientId"] == credential.client_id
    trail = await client.get(f"/audits/v1?tokenId={credential.client_id}", headers=vendor)
    assert trail.status_code == 200, trail.text
    assert "leak.revoked" in [item["action"] for item in trail.json()["items"]]
    # APIs that verify locally hear of it.
    assert published == [
        {"type": "refreshTokenFamily", "familyId": family_id, "clientId": credential.client_id}
    ]


async def test_a_leaked_refresh_token_of_a_personal_credential_names_its_user(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    world = await build_world(factory)
    credential = await user_credential(client, vendor, world.tenant.id, world.admin.id)
    pair = await exchange_ok(client, credential)

    answer = await report(client, vendor, pair["refresh_token"], url=SOURCE_URL)

    assert answer["outcome"] == "revoked"
    (event,) = await leak_events(db)
    assert event.details["clientId"] == credential.client_id
    assert event.details["userId"] == world.admin.id
    trail = await client.get(f"/audits/v1?userId={world.admin.id}", headers=vendor)
    assert "leak.revoked" in [item["action"] for item in trail.json()["items"]]


async def test_a_leaked_access_token_is_deleted(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    created = await create_access_token(client, vendor, tenant.id)
    assert (await validate(client, api_key(created["secret"]))).status_code == 200

    answer = await report(client, vendor, created["secret"], source="pastebin")

    assert answer["outcome"] == "revoked"
    assert answer["kind"] == "access_token"
    assert answer["label"] == "true_positive"
    assert (await validate(client, api_key(created["secret"]))).status_code == 401
    (event,) = await leak_events(db)
    assert (event.target_type, event.target_id) == ("access_token", created["id"])
    assert (await report(client, vendor, created["secret"]))["outcome"] == "already_reported"


async def test_a_leaked_exchanged_jwt_deletes_the_credential_it_speaks_for(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)

    answer = await report(client, vendor, pair["access_token"])

    assert answer["outcome"] == "revoked"
    assert answer["kind"] == "client_credential_jwt"
    assert (await validate(client, bearer(pair["access_token"]))).status_code == 401
    assert (await client.post(EXCHANGE, json=credential.body)).status_code == 401


# --- notify ------------------------------------------------------------------------------------


async def test_under_notify_a_leak_is_recorded_once_and_the_secret_keeps_working(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    notify = dataclasses.replace(services.settings, leak_policy="notify")
    with replaced(services, "settings", notify):
        first = await report(client, vendor, credential.secret, url=SOURCE_URL)
        again = await report(client, vendor, credential.secret, url=SOURCE_URL)
    assert first["outcome"] == "notified"
    assert first["label"] == again["label"] == "true_positive"
    assert again["outcome"] == "already_reported"
    await exchange_ok(client, credential)
    (event,) = await leak_events(db)
    assert event.action == "leak.notified"
    assert event.details["policy"] == "notify"

    # Reported again once the policy is revoke: it is revoked then.
    assert (await report(client, vendor, credential.secret))["outcome"] == "revoked"
    assert (await client.post(EXCHANGE, json=credential.body)).status_code == 401


# --- nothing to do ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (SecretShape().new("cs"), "not_ours"),
        (SecretShape().new("rt"), "not_ours"),
        (new_secret(), "not_ours"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "not_ours"),
        (wrong_checksum(SecretShape().new("cs")), "malformed"),
    ],
)
async def test_a_value_that_is_not_ours_or_malformed_changes_nothing_and_says_so(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    value: str,
    outcome: str,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    answer = await report(client, vendor, value, url=SOURCE_URL)
    assert answer["outcome"] == outcome
    assert answer["label"] == "false_positive"
    assert answer["kind"] is None
    assert "nothing changed" in answer["message"]
    assert await leak_events(db) == []
    assert await db.scalar(sa.select(sa.func.count()).select_from(LeakReport)) == 0
    await exchange_ok(client, credential)


async def test_a_dead_value_changes_nothing_and_says_so(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    used = pair["refresh_token"]
    await refresh_ok(client, used)

    answer = await report(client, vendor, used)

    assert answer["outcome"] == "not_live"
    assert answer["kind"] == "refresh_token"
    assert answer["label"] == "false_positive"
    assert await leak_events(db) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": ""},
        {"token": 42},
        {"token": "x" * 8193},
        {"token": "x", "extra": 1},
        {"token": "x", "url": "u" * 2049},
    ],
)
async def test_a_bad_report_is_refused_with_400_and_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession, body: dict[str, Any]
) -> None:
    response = await client.post(LEAKS, headers=vendor, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"]
    assert await leak_events(db) == []


async def test_only_the_vendor_reports_leaks_by_value(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    response = await client.post(LEAKS, json={"token": credential.secret})
    assert response.status_code == 401
    await exchange_ok(client, credential)


def test_the_leak_policy_and_githubs_keys_are_settings_checked_at_start() -> None:
    assert load_settings(VALID).leak_policy == "revoke"
    assert load_settings({**VALID, "M2M_LEAK_POLICY": "notify"}).leak_policy == "notify"
    with pytest.raises(ConfigError) as refused:
        load_settings({**VALID, "M2M_LEAK_POLICY": "ignore"})
    assert str(refused.value) == "M2M_LEAK_POLICY: must be revoke or notify, got 'ignore'"
    url = "https://api.github.com/meta/public_keys/secret_scanning"
    read = load_settings({**VALID, "M2M_GITHUB_SECRET_SCANNING_KEYS_URL": url})
    assert read.github_secret_scanning_keys_url == url
    for bad in (
        {"M2M_GITHUB_SECRET_SCANNING_KEYS_URL": "ftp://example.test/keys"},
        {
            "M2M_GITHUB_SECRET_SCANNING_KEYS_URL": url,
            "M2M_GITHUB_SECRET_SCANNING_KEYS_FILE": "/etc/keys.json",
        },
    ):
        with pytest.raises(ConfigError) as refused:
            load_settings({**VALID, **bad})
        assert refused.value.variable.startswith("M2M_GITHUB_SECRET_SCANNING_KEYS_")
