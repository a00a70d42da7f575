"""Last used (the README's "Last used"): when each access token and credential was last used and
from which addresses, noted in memory on the hot paths and written in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.last_used import UsageRecorder
from domain.models import AccessToken
from domain.settings import Settings
from tests.factories import Factory, add_access_token, build_scene
from tests.processes import running_server
from tests.steps import (
    OAUTH_REVOKE,
    TENANT_ACCESS,
    api_key,
    basic,
    client_at,
    create_access_token,
    exchange_ok,
    refresh_ok,
    replaced,
    serving,
    simple_credential,
    validate,
)
from tests.suite import both_backends, serve_only

pytestmark = both_backends

ADDRESS = "x-m2m-client-address"
TENANT_API = "/identity/resources/tenants/api-tokens/v1"
VENDOR_USERS = "/identity/resources/vendor-only/users/access-tokens/v1"
VENDOR_TENANTS = "/identity/resources/vendor-only/tenants/access-tokens/v1"
INTROSPECT = "/oauth/introspect"
T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def listed_access_token(
    client: httpx.AsyncClient, vendor: dict[str, str], tenant_id: str, token_id: str
) -> dict[str, Any]:
    response = await client.get(TENANT_ACCESS, headers={**vendor, "frontegg-tenant-id": tenant_id})
    assert response.status_code == 200, response.text
    (listed,) = [item for item in response.json()["accessTokens"] if item["id"] == token_id]
    return listed


async def stored_token(db: AsyncSession, token_id: str) -> AccessToken:
    row = await db.scalar(
        sa.select(AccessToken)
        .where(AccessToken.id == token_id)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


async def test_a_validation_is_noted_in_memory_and_written_with_the_address_the_api_passes(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    listed = await listed_access_token(client, vendor, tenant.id, token["id"])
    assert listed["lastUsedAt"] is None
    assert listed["lastUsedFrom"] == []

    with freeze_time(T0, real_asyncio=True):
        response = await validate(client, {**api_key(token["secret"]), ADDRESS: "203.0.113.7"})
    assert response.status_code == 200, response.text

    # Nothing written on the validation path: only the write stores it.
    assert (await stored_token(db, token["id"])).last_used_at is None
    assert await services.usage.write(services.sessions) == 1

    listed = await listed_access_token(client, vendor, tenant.id, token["id"])
    assert listed["lastUsedAt"] == iso(T0)
    assert listed["lastUsedFrom"] == [{"address": "203.0.113.7", "lastUsedAt": iso(T0)}]
    assert await services.usage.write(services.sessions) == 0  # nothing new to write


async def test_the_last_five_distinct_addresses_are_kept_newest_first(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    addresses = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
    for minute, address in enumerate([*addresses, "10.0.0.2"]):
        with freeze_time(T0 + timedelta(minutes=minute), real_asyncio=True):
            answer = await validate(client, {**api_key(token["secret"]), ADDRESS: address})
        assert answer.status_code == 200
        if minute % 3 == 0:  # some uses written apart: the rows are merged, not replaced
            await services.usage.write(services.sessions)
    await services.usage.write(services.sessions)

    listed = await listed_access_token(client, vendor, tenant.id, token["id"])
    assert listed["lastUsedAt"] == iso(T0 + timedelta(minutes=6))
    assert [entry["address"] for entry in listed["lastUsedFrom"]] == [
        "10.0.0.2",
        "10.0.0.5",
        "10.0.0.4",
        "10.0.0.3",
        "2001:db8::1",
    ]


async def test_a_header_that_is_no_address_records_the_use_without_it_and_a_refusal_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    other = await create_access_token(client, vendor, tenant.id)
    await client.delete(
        f"{TENANT_ACCESS}/{other['id']}", headers={**vendor, "frontegg-tenant-id": tenant.id}
    )

    for garbage in ["not-an-address", "1.2.3.4; DROP TABLE", "10.0.0.0/33", "x" * 500, ""]:
        response = await validate(client, {**api_key(token["secret"]), ADDRESS: garbage})
        assert response.status_code == 200
    refused = await validate(client, {**api_key(other["secret"]), ADDRESS: "10.9.9.9"})
    assert refused.status_code == 401
    await services.usage.write(services.sessions)

    row = await stored_token(db, token["id"])
    assert row.last_used_at is not None
    assert row.last_used_addresses == []


async def test_an_exchange_and_a_refresh_record_the_credentials_use_from_the_client_address(
    app: Litestar,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    async with client_at(app, "198.51.100.4") as first, client_at(app, "198.51.100.9") as second:
        credential = await simple_credential(first, vendor, factory)
        with freeze_time(T0, real_asyncio=True):
            pair = await exchange_ok(first, credential)
        await services.usage.write(services.sessions)
        with freeze_time(T0 + timedelta(minutes=5), real_asyncio=True):
            await refresh_ok(second, pair["refresh_token"])
        await services.usage.write(services.sessions)

        response = await first.get(
            TENANT_API, headers={**vendor, "frontegg-tenant-id": credential.tenant_id}
        )
    assert response.status_code == 200, response.text
    (listed,) = response.json()
    assert listed["lastUsedAt"] == iso(T0 + timedelta(minutes=5))
    assert listed["lastUsedFrom"] == [
        {"address": "198.51.100.9", "lastUsedAt": iso(T0 + timedelta(minutes=5))},
        {"address": "198.51.100.4", "lastUsedAt": iso(T0)},
    ]


@pytest.mark.usefixtures("fresh_validity_cache")
async def test_a_vendor_only_lookup_by_id_and_an_introspection_of_a_live_token_are_uses(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    # The Frontegg SDKs check an access token by looking it up by id: without counting that,
    # the unused-token policy would delete tokens in use.
    scene = await build_scene(factory)
    user_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    tenant_token = await create_access_token(client, vendor, scene.tenant.id)
    introspected = await create_access_token(client, vendor, scene.tenant.id)
    untouched = await create_access_token(client, vendor, scene.tenant.id)
    in_tenant = {**vendor, "frontegg-tenant-id": scene.tenant.id}
    # Near now, not base: the vendor's token must still be valid.
    base = utcnow().replace(microsecond=0) + timedelta(minutes=1)

    with freeze_time(base, real_asyncio=True):
        found = await client.get(f"{VENDOR_USERS}/{user_token['id']}", headers=in_tenant)
        assert found.status_code == 200, found.text
    with freeze_time(base + timedelta(minutes=1), real_asyncio=True):
        found = await client.get(f"{VENDOR_TENANTS}/{tenant_token['id']}", headers=in_tenant)
        assert found.status_code == 200, found.text
    with freeze_time(base + timedelta(minutes=2), real_asyncio=True):
        answer = await client.post(
            INTROSPECT, data={"token": introspected["secret"]}, headers=vendor
        )
        assert (answer.status_code, answer.json()["active"]) == (200, True)
    # Looked up as the wrong kind or in another tenant: not found, so no use.
    other = {**vendor, "frontegg-tenant-id": scene.other_tenant.id}
    assert (
        await client.get(f"{VENDOR_TENANTS}/{untouched['id']}", headers=other)
    ).status_code == 404
    assert (
        await client.get(f"{VENDOR_USERS}/{untouched['id']}", headers=in_tenant)
    ).status_code == 404
    # The list of active ids names every token and uses none.
    assert (await client.get(f"{VENDOR_TENANTS}/active", headers=in_tenant)).status_code == 200

    assert services.usage.pending == 3  # noted in memory, nothing written yet
    assert (await stored_token(db, user_token["id"])).last_used_at is None
    assert await services.usage.write(services.sessions) == 3
    for token, at in [
        (user_token, base),
        (tenant_token, base + timedelta(minutes=1)),
        (introspected, base + timedelta(minutes=2)),
    ]:
        row = await stored_token(db, token["id"])
        assert row.last_used_at == at
        assert row.last_used_addresses == []  # the caller is the vendor's API, not the holder
    assert (await stored_token(db, untouched["id"])).last_used_at is None


async def test_an_introspection_of_a_dead_token_records_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    deleted = await client.delete(
        f"{TENANT_ACCESS}/{token['id']}", headers={**vendor, "frontegg-tenant-id": tenant.id}
    )
    assert deleted.status_code < 300, deleted.text
    answer = await client.post(INTROSPECT, data={"token": token["secret"]}, headers=vendor)
    assert answer.json() == {"active": False}
    assert services.usage.pending == 0


async def test_an_oauth_revocation_records_the_credentials_use_from_the_client_address(
    app: Litestar,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    async with client_at(app, "198.51.100.4") as first, client_at(app, "198.51.100.7") as second:
        credential = await simple_credential(first, vendor, factory)
        with freeze_time(T0, real_asyncio=True):
            pair = await exchange_ok(first, credential)
        await services.usage.write(services.sessions)
        with freeze_time(T0 + timedelta(minutes=5), real_asyncio=True):
            revoked = await second.post(
                OAUTH_REVOKE,
                data={"token": pair["refresh_token"]},
                headers=basic(credential.client_id, credential.secret),
            )
        assert revoked.status_code == 200, revoked.text
        # A wrong secret authenticates nothing, so it is no use.
        with freeze_time(T0 + timedelta(minutes=9), real_asyncio=True):
            refused = await second.post(
                OAUTH_REVOKE,
                data={"token": pair["refresh_token"]},
                headers=basic(credential.client_id, credential.secret + "x"),
            )
        assert refused.status_code == 401, refused.text
        await services.usage.write(services.sessions)

        response = await first.get(
            TENANT_API, headers={**vendor, "frontegg-tenant-id": credential.tenant_id}
        )
    (listed,) = response.json()
    assert listed["lastUsedAt"] == iso(T0 + timedelta(minutes=5))
    assert listed["lastUsedFrom"] == [
        {"address": "198.51.100.7", "lastUsedAt": iso(T0 + timedelta(minutes=5))},
        {"address": "198.51.100.4", "lastUsedAt": iso(T0)},
    ]


async def test_an_ipv6_client_of_an_exchange_is_recorded_by_its_64_as_rate_limits_count_it(
    app: Litestar, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    async with client_at(app, "2001:db8:1:2:3:4:5:6") as client:
        credential = await simple_credential(client, vendor, factory)
        await exchange_ok(client, credential)
        await services.usage.write(services.sessions)
        response = await client.get(
            TENANT_API, headers={**vendor, "frontegg-tenant-id": credential.tenant_id}
        )
    (listed,) = response.json()
    assert [use["address"] for use in listed["lastUsedFrom"]] == ["2001:db8:1:2::/64"]


async def test_a_flood_of_addresses_for_one_token_holds_little_memory_and_keeps_the_newest(
    factory: Factory, services: Services, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    token_id = await add_access_token(services.sessions, tenant.id)
    recorder = UsageRecorder()
    for number in range(10_000):
        address = f"10.{number // 65536}.{number // 256 % 256}.{number % 256}".encode()
        recorder.note_access_token(token_id, T0 + timedelta(milliseconds=number), address)
        assert len(recorder._tokens[token_id].addresses) <= 16

    await recorder.write(services.sessions)
    row = await stored_token(db, token_id)
    assert [entry["address"] for entry in row.last_used_addresses] == [
        "10.0.39.15",
        "10.0.39.14",
        "10.0.39.13",
        "10.0.39.12",
        "10.0.39.11",
    ]


async def test_an_earlier_use_written_later_by_another_process_never_moves_last_used_back(
    factory: Factory, services: Services, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    token_id = await add_access_token(services.sessions, tenant.id)
    late, early = UsageRecorder(), UsageRecorder()  # two API processes
    late.note_access_token(token_id, T0 + timedelta(seconds=30), b"10.0.0.2")
    early.note_access_token(token_id, T0, b"10.0.0.1")

    await late.write(services.sessions)
    await early.write(services.sessions)

    row = await stored_token(db, token_id)
    assert row.last_used_at == T0 + timedelta(seconds=30)
    assert [entry["address"] for entry in row.last_used_addresses] == ["10.0.0.2", "10.0.0.1"]


async def test_a_use_of_a_token_deleted_before_the_write_is_dropped_quietly(
    factory: Factory, services: Services, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    gone = await add_access_token(services.sessions, tenant.id)
    kept = await add_access_token(services.sessions, tenant.id)
    recorder = UsageRecorder()
    recorder.note_access_token(gone, T0, None)
    recorder.note_access_token(kept, T0, None)
    await db.execute(sa.delete(AccessToken).where(AccessToken.id == gone))
    await db.commit()

    assert await recorder.write(services.sessions) == 1
    assert (await stored_token(db, kept)).last_used_at == T0


@serve_only
async def test_a_write_that_fails_keeps_the_uses_for_the_next_one(
    factory: Factory, services: Services, settings: Settings, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    token_id = await add_access_token(services.sessions, tenant.id)
    recorder = UsageRecorder()
    recorder.note_access_token(token_id, T0, b"10.0.0.1")
    nowhere = create_engine(settings.database_url.rsplit("/", 1)[0] + "/m2m_no_such_database")
    try:
        assert await recorder.write(create_session_factory(nowhere)) == 0
    finally:
        await nowhere.dispose()
    recorder.note_access_token(token_id, T0 + timedelta(seconds=1), b"10.0.0.2")

    assert recorder.pending == 1
    assert await recorder.write(services.sessions) == 1
    row = await stored_token(db, token_id)
    assert row.last_used_at == T0 + timedelta(seconds=1)
    assert [entry["address"] for entry in row.last_used_addresses] == ["10.0.0.2", "10.0.0.1"]


async def test_with_recording_off_nothing_is_noted(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    with replaced(services, "usage", UsageRecorder(enabled=False)) as off:
        assert (await validate(client, api_key(token["secret"]))).status_code == 200
        assert off.pending == 0
        await off.write(services.sessions)
    assert (await stored_token(db, token["id"])).last_used_at is None


async def test_an_api_process_writes_the_uses_it_holds_when_it_shuts_down(
    factory: Factory, settings: Settings, vendor: dict[str, str], db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    async with serving(settings) as (own, client):
        token = await create_access_token(client, vendor, tenant.id)
        answer = await validate(client, {**api_key(token["secret"]), ADDRESS: "192.0.2.10"})
        assert answer.status_code == 200
        assert own.usage.pending == 1
        assert (await stored_token(db, token["id"])).last_used_at is None
    # Closed like a process at shutdown: what it held is written.
    row = await stored_token(db, token["id"])
    assert row.last_used_at is not None
    assert [entry["address"] for entry in row.last_used_addresses] == ["192.0.2.10"]


async def test_a_use_clears_the_unused_token_warning(
    factory: Factory, services: Services, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    token_id = await add_access_token(services.sessions, tenant.id)
    await db.execute(
        sa.update(AccessToken).where(AccessToken.id == token_id).values(unused_warning_at=T0)
    )
    await db.commit()
    recorder = UsageRecorder()
    recorder.note_access_token(token_id, T0 + timedelta(days=1), None)
    await recorder.write(services.sessions)
    assert (await stored_token(db, token_id)).unused_warning_at is None


async def test_the_console_lists_each_tokens_last_use(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    with freeze_time(T0, real_asyncio=True):
        await validate(client, {**api_key(token["secret"]), ADDRESS: "203.0.113.8"})
    await services.usage.write(services.sessions)

    response = await client.get(f"/console/v1/tenants/{tenant.id}/tokens", headers=vendor)
    assert response.status_code == 200, response.text
    (listed,) = response.json()["tokens"]
    assert listed["lastUsedAt"] == iso(T0)
    assert listed["lastUsedFrom"] == [{"address": "203.0.113.8", "lastUsedAt": iso(T0)}]


@serve_only
@pytest.mark.processes
async def test_m2m_serve_writes_the_uses_it_holds_when_stopped_with_sigterm(
    settings: Settings, vendor: dict[str, str], client: httpx.AsyncClient, factory: Factory,
    db: AsyncSession,
) -> None:  # fmt: skip
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    # Its periodic write is 30 s away: only the one at shutdown can store the use in time.
    with running_server(settings, M2M_LAST_USED_WRITE_SECONDS="30") as base:
        async with httpx.AsyncClient(base_url=base) as live:
            answer = await validate(live, {**api_key(token["secret"]), ADDRESS: "192.0.2.77"})
        assert answer.status_code == 200, answer.text
        assert (await stored_token(db, token["id"])).last_used_at is None
    # running_server's exit sent SIGTERM and waited for the process to end.
    row = await stored_token(db, token["id"])
    assert row.last_used_at is not None
    assert [entry["address"] for entry in row.last_used_addresses] == ["192.0.2.77"]
