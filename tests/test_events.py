"""Outbound events: endpoints through the routes, signed deliveries to a real receiver on
127.0.0.1 (checked with the `standardwebhooks` package), retries, redelivery, the SSRF guard."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import events, jobs
from domain.clock import utcnow
from domain.job_runs import run_job
from domain.jobs import JobContext
from domain.keys import MasterKey, rotate_signing_key
from domain.models import EventDelivery, EventEndpoint, OutboundEvent
from tests.factories import Factory, add_access_token, add_credential
from tests.kinds import TENANT_ACCESS, TENANT_API, USER_ACCESS, USER_API
from tests.receiver import Receiver, running_receiver
from tests.steps import (
    configure,
    create,
    exchange_ok,
    finish_jobs,
    refresh,
    refresh_ok,
    replaced,
    simple_credential,
    use_strategy,
    vendor_acting,
)

ENDPOINTS = "/events/endpoints"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


async def register(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    receiver: Receiver,
    path: str,
    event_types: list[str],
) -> dict[str, Any]:
    response = await client.post(
        ENDPOINTS,
        headers=vendor,
        json={"url": receiver.url(path), "eventTypes": event_types, "description": path},
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    receiver.inbox(path).secret = endpoint["secret"]
    return endpoint


def job_context(services: Services, sessions: async_sessionmaker[AsyncSession]) -> JobContext:
    return JobContext(
        sessions=sessions,
        validity=services.validity,
        clock=utcnow,
        events=events.DeliveryPolicy.from_settings(services.settings, services.master_key),
        feed=services.feed,
    )


async def deliver(services: Services, sessions: async_sessionmaker[AsyncSession]) -> None:
    """What the workers do: the jobs requests enqueued, then a delivery run."""
    await finish_jobs(services)
    await run_job(job_context(services, sessions), jobs.DELIVER_EVENTS)


async def test_each_event_type_arrives_signed_once(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    factory: Factory,
    receiver: Receiver,
) -> None:
    await register(client, vendor, receiver, "/all", list(events.EVENT_TYPES))
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    created: list[tuple[str, str]] = []
    for kind in (USER_API, USER_ACCESS, TENANT_API, TENANT_ACCESS):
        await use_strategy(client, vendor, kind)
        headers = vendor_acting(vendor, kind, tenant.id, user.id)
        token_id = (await create(client, headers, kind))[kind.id_key]
        created.append((kind.name, token_id))
        deleted = await client.delete(kind.item(token_id), headers=headers)
        assert deleted.status_code == 200, deleted.text
    # Refresh-token reuse; the M2M switch; key rotation; a user's deletion; expiry and warnings.
    await use_strategy(client, vendor, TENANT_API)
    credential = await simple_credential(client, vendor, factory)
    first = await exchange_ok(client, credential)
    await refresh_ok(client, first["refresh_token"])
    assert (await refresh(client, first["refresh_token"])).status_code == 401
    await configure(client, vendor, apiTokensEnabled=False)
    await configure(client, vendor, apiTokensEnabled=True)
    async with sessions() as session:
        await rotate_signing_key(session, services.master_key, utcnow())
        await session.commit()
    assert (
        await client.delete(f"/identity/resources/users/v1/{user.id}", headers=vendor)
    ).status_code == 200
    expiring = await add_credential(sessions, tenant.id, expires_at=utcnow() + timedelta(days=3))
    expired = await add_access_token(
        sessions, tenant.id, expires_at=utcnow() - timedelta(seconds=1)
    )
    context = job_context(services, sessions)
    await run_job(context, jobs.WARN_EXPIRING_TOKENS)
    await run_job(context, jobs.EXPIRE_TOKENS)
    test = await client.post(
        f"{ENDPOINTS}/{(await endpoints(client, vendor))[0]['id']}/test", headers=vendor
    )
    assert test.status_code == 202, test.text
    await deliver(services, sessions)

    inbox = receiver.inbox("/all")
    assert inbox.bad_signatures == 0
    assert all(count == 1 for count in inbox.ids.values()), inbox.ids
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in inbox.events:
        by_type.setdefault(event["type"], []).append(event)
        assert event["id"].startswith("evt_")
        assert event["timestamp"].endswith("Z")
    assert sorted(
        (event["data"]["kind"], event["data"]["id"]) for event in by_type["token.created"]
    ) == sorted([*created, ("tenantApiToken", credential.client_id)])
    assert sorted(event["data"]["id"] for event in by_type["token.deleted"]) == sorted(
        token_id for _, token_id in created
    )
    (reuse,) = by_type["refresh_token.reuse_detected"]
    assert reuse["data"]["clientId"] == credential.client_id
    assert [event["data"]["enabled"] for event in by_type["m2m.switched"]] == [False, True]
    assert len(by_type["key.rotated"]) == 1
    assert {"tenantId": tenant.id, "userId": user.id, "reason": "user.deleted"} in [
        event["data"] for event in by_type["tokens.revoked"]
    ]
    (warning,) = by_type["token.expiring"]
    assert (warning["data"]["id"], warning["data"]["daysBefore"]) == (expiring, 7)
    assert [event["data"]["id"] for event in by_type["token.expired"]] == [expired]
    assert by_type["test"][0]["data"] == {"endpointId": (await endpoints(client, vendor))[0]["id"]}
    # Those not wired yet come from the changes that other features make (rotation, leaks...).
    assert set(by_type) == set(events.EVENT_TYPES) - {
        "token.rotated",
        "token.leaked",
        "token.unused_warning",
    }


async def endpoints(client: httpx.AsyncClient, vendor: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get(ENDPOINTS, headers=vendor)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


# Also as `m2m dev` runs it: SQLite, the jobs in process.
@pytest.mark.both_backends
async def test_no_event_reaches_an_endpoint_not_subscribed_to_it(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    factory: Factory,
    receiver: Receiver,
) -> None:
    await register(client, vendor, receiver, "/created", ["token.created"])
    await register(client, vendor, receiver, "/switch", ["m2m.switched"])
    credential = await simple_credential(client, vendor, factory)
    await configure(client, vendor, apiTokensEnabled=False)
    await deliver(services, sessions)

    assert receiver.inbox("/created").types() == ["token.created"]
    assert receiver.inbox("/created").events[0]["data"]["id"] == credential.client_id
    assert receiver.inbox("/switch").types() == ["m2m.switched"]
    await configure(client, vendor, apiTokensEnabled=True)


async def test_a_failing_receiver_gets_every_event_once_it_recovers(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    factory: Factory,
    receiver: Receiver,
    db: AsyncSession,
) -> None:
    endpoint = await register(client, vendor, receiver, "/flaky", ["token.created"])
    inbox = receiver.inbox("/flaky")
    inbox.failures = 3 * 3  # each of three events fails three times
    ids = [(await simple_credential(client, vendor, factory)).client_id for _ in range(3)]
    with freeze_time(utcnow(), real_asyncio=True) as clock:
        await deliver(services, sessions)
        assert inbox.events == []
        for wait in (5, 20, 80):
            # Nothing is due before its backoff has passed ...
            clock.tick(timedelta(seconds=wait - 1))
            await deliver(services, sessions)
            assert inbox.events == []
            clock.tick(timedelta(seconds=1))
            await deliver(services, sessions)
    assert sorted(event["data"]["id"] for event in inbox.events) == sorted(ids)
    assert all(count == 1 for count in inbox.ids.values())
    log = await client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=vendor)
    assert log.status_code == 200, log.text
    for delivery in log.json():
        assert delivery["status"] == "delivered"
        assert delivery["attempts"] == 4
        assert [attempt["statusCode"] for attempt in delivery["attemptLog"]] == [500, 500, 500, 204]
        assert all(attempt["latencyMs"] >= 0 for attempt in delivery["attemptLog"])
    stored = await db.get(EventEndpoint, endpoint["id"])
    assert stored is not None
    assert stored.failing_since is None
    assert stored.enabled


async def test_an_endpoint_failing_longer_than_the_setting_is_turned_off_and_can_be_again_on(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    factory: Factory,
    receiver: Receiver,
    db: AsyncSession,
) -> None:
    endpoint = await register(client, vendor, receiver, "/down", ["token.created"])
    inbox = receiver.inbox("/down")
    inbox.failures = 1000
    await simple_credential(client, vendor, factory)
    disable_after = timedelta(seconds=services.settings.event_endpoint_disable_after_seconds)

    async def announce() -> None:
        async with sessions() as session:
            events.announce(session, events.TOKEN_CREATED, {"id": "t"}, utcnow())
            await session.commit()

    with freeze_time(utcnow(), real_asyncio=True) as clock:
        await deliver(services, sessions)
        clock.tick(disable_after - timedelta(hours=6))
        await announce()
        await deliver(services, sessions)
        enabled, failing_since = (
            await db.execute(
                sa.select(EventEndpoint.enabled, EventEndpoint.failing_since).where(
                    EventEndpoint.id == endpoint["id"]
                )
            )
        ).one()
        assert enabled is True
        assert failing_since is not None
        clock.tick(timedelta(hours=6))
        await announce()
        await deliver(services, sessions)
    off = (await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=vendor)).json()
    assert off["enabled"] is False
    assert "turned off" in off["disabledReason"]
    requests = inbox.requests
    await simple_credential(client, vendor, factory)
    await deliver(services, sessions)
    assert inbox.requests == requests  # nothing is sent to it while it is off
    inbox.failures = 0
    back = await client.patch(
        f"{ENDPOINTS}/{endpoint['id']}", headers=vendor, json={"enabled": True}
    )
    assert back.status_code == 200, back.text
    assert back.json()["disabledReason"] is None
    await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    await deliver(services, sessions)
    assert inbox.types() == ["test"]


@pytest.mark.both_backends
async def test_redelivery_sends_a_delivered_event_again_with_the_same_id(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    endpoint = await register(client, vendor, receiver, "/again", ["token.created"])
    sent = await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    assert sent.status_code == 202
    await deliver(services, sessions)
    (delivery,) = (
        await client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=vendor)
    ).json()
    assert delivery["eventType"] == "test"
    assert delivery["status"] == "delivered"
    again = await client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/{delivery['id']}/redeliver", headers=vendor
    )
    assert again.status_code == 202, again.text
    await deliver(services, sessions)
    inbox = receiver.inbox("/again")
    assert inbox.ids[sent.json()["eventId"]] == 2
    unknown = await client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/nope/redeliver", headers=vendor
    )
    assert unknown.status_code == 404


async def test_the_secret_is_shown_once_and_a_rotated_one_signs_from_then_on(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    db: AsyncSession,
) -> None:
    endpoint = await register(client, vendor, receiver, "/rotating", ["token.created"])
    old = endpoint["secret"]
    assert old.startswith("whsec_")
    assert "secret" not in (await endpoints(client, vendor))[0]
    one = await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=vendor)
    assert "secret" not in one.json()
    stored = await db.get(EventEndpoint, endpoint["id"])
    assert stored is not None
    assert old.encode() not in stored.secret_encrypted
    rotated = await client.post(f"{ENDPOINTS}/{endpoint['id']}/secret", headers=vendor)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.headers["cache-control"] == "no-store"
    await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    await deliver(services, sessions)
    inbox = receiver.inbox("/rotating")
    assert inbox.bad_signatures == 1
    assert inbox.events == []
    inbox.secret = new
    await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    await deliver(services, sessions)
    assert inbox.types() == ["test"]


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    endpoint = await register(client, vendor, receiver, "/moved", ["token.created"])
    receiver.inbox("/moved").redirect_to = receiver.url("/elsewhere")
    await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    await deliver(services, sessions)
    assert receiver.inbox("/elsewhere").requests == 0
    (delivery,) = (
        await client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=vendor)
    ).json()
    assert delivery["status"] == "pending"
    assert delivery["lastStatusCode"] == 302


async def test_a_slow_endpoint_times_out_without_holding_the_others(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    import threading

    slow = await register(client, vendor, receiver, "/slow", ["token.created"])
    fast = await register(client, vendor, receiver, "/fast", ["token.created"])
    receiver.inbox("/slow").hold = threading.Event()
    await client.post(f"{ENDPOINTS}/{slow['id']}/test", headers=vendor)
    await client.post(f"{ENDPOINTS}/{fast['id']}/test", headers=vendor)
    started = time.monotonic()
    await deliver(services, sessions)
    took = time.monotonic() - started
    assert receiver.inbox("/fast").types() == ["test"]
    assert took < events.DELIVERY_TIMEOUT_SECONDS
    (delivery,) = (await client.get(f"{ENDPOINTS}/{slow['id']}/deliveries", headers=vendor)).json()
    assert delivery["status"] == "pending"
    assert delivery["lastError"]
    assert "Timeout" in delivery["lastError"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://192.168.0.1/hook",
    ],
)
async def test_endpoints_on_private_addresses_are_refused_unless_allowed(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    db: AsyncSession,
    url: str,
) -> None:
    strict = dataclasses.replace(services.settings, event_endpoints_allow_private=False)
    with replaced(services, "settings", strict):
        response = await client.post(
            ENDPOINTS, headers=vendor, json={"url": url, "eventTypes": ["token.created"]}
        )
    assert response.status_code == 400, response.text
    assert "private" in response.text
    assert await db.scalar(sa.select(sa.func.count()).select_from(EventEndpoint)) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://example.com/x", "eventTypes": ["token.created"]}, "http"),
        ({"url": "http://u:p@example.com/x", "eventTypes": ["token.created"]}, "credentials"),
        ({"url": "http://example.com/x", "eventTypes": []}, "eventTypes"),
        ({"url": "http://example.com/x", "eventTypes": ["token.nope"]}, "token.nope"),
        ({"url": "http://example.com/x", "eventTypes": "token.created"}, "eventTypes"),
        ({"url": "http://example.com/" + "x" * 3000, "eventTypes": ["test"]}, "url"),
        ({"eventTypes": ["test"]}, "url"),
        ({"url": "http://example.com/x", "eventTypes": ["test"], "extra": 1}, "extra"),
    ],
)
async def test_bad_endpoints_are_refused_and_change_nothing(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    db: AsyncSession,
    body: dict[str, Any],
    message: str,
) -> None:
    response = await client.post(ENDPOINTS, headers=vendor, json=body)
    assert response.status_code in (400, 422), response.text
    assert message in response.text
    assert await db.scalar(sa.select(sa.func.count()).select_from(EventEndpoint)) == 0


async def test_only_the_vendor_manages_endpoints(
    client: httpx.AsyncClient, vendor: dict[str, str], receiver: Receiver
) -> None:
    endpoint = await register(client, vendor, receiver, "/mine", ["test"])
    for method, path in (
        ("GET", ENDPOINTS),
        ("POST", ENDPOINTS),
        ("GET", f"{ENDPOINTS}/{endpoint['id']}"),
        ("DELETE", f"{ENDPOINTS}/{endpoint['id']}"),
        ("POST", f"{ENDPOINTS}/{endpoint['id']}/secret"),
        ("GET", "/revocations/stream"),
    ):
        response = await client.request(method, path, headers={"x-access-token": "nope"})
        assert response.status_code == 401, (method, path)
    assert len(await endpoints(client, vendor)) == 1


async def test_deleting_an_endpoint_drops_its_deliveries(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    receiver: Receiver,
    db: AsyncSession,
) -> None:
    endpoint = await register(client, vendor, receiver, "/gone", ["test"])
    await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    deleted = await client.delete(f"{ENDPOINTS}/{endpoint['id']}", headers=vendor)
    assert deleted.status_code == 204
    assert (await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=vendor)).status_code == 404
    assert await db.scalar(sa.select(sa.func.count()).select_from(EventDelivery)) == 0
    assert await db.scalar(sa.select(sa.func.count()).select_from(OutboundEvent)) == 1


async def test_an_event_is_announced_only_if_its_change_commits(
    sessions: async_sessionmaker[AsyncSession], db: AsyncSession
) -> None:
    async with sessions() as session:
        events.announce(session, events.TEST, {"n": 1}, utcnow())
        await session.rollback()
    async with sessions() as session:
        events.announce(session, events.TEST, {"n": 2}, utcnow())
        await session.commit()
    stored = list(await db.scalars(sa.select(OutboundEvent.data)))
    assert stored == [{"n": 2}]


async def test_a_new_master_key_reseals_the_endpoint_secrets_and_they_still_sign(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    await register(client, vendor, receiver, "/resealed", ["token.created"])
    new = MasterKey(os.urandom(32))
    async with sessions() as session:
        assert await events.reencrypt_endpoint_secrets(session, services.master_key, new) == 1
        await session.commit()
    async with sessions() as session:
        events.announce(session, events.TOKEN_CREATED, {"id": "t"}, utcnow())
        await session.commit()
    with replaced(services, "master_key", new):
        await deliver(services, sessions)
    inbox = receiver.inbox("/resealed")
    assert inbox.types() == ["token.created"]
    assert inbox.bad_signatures == 0


async def test_the_expiry_job_forgets_events_older_than_30_days_with_their_deliveries(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    db: AsyncSession,
) -> None:
    endpoint = await register(client, vendor, receiver, "/old", ["test"])
    with freeze_time(utcnow() - jobs.EVENT_RETENTION - timedelta(minutes=1), real_asyncio=True):
        async with sessions() as session:
            await events.send_test_event(session, None, endpoint["id"], utcnow())
            await session.commit()
    recent = await client.post(f"{ENDPOINTS}/{endpoint['id']}/test", headers=vendor)
    await run_job(job_context(services, sessions), jobs.EXPIRE_TOKENS)
    assert list(await db.scalars(sa.select(OutboundEvent.id))) == [recent.json()["eventId"]]
    assert await db.scalar(sa.select(sa.func.count()).select_from(EventDelivery)) == 1


async def announced(db: AsyncSession, event_type: str) -> list[dict[str, Any]]:
    rows = await db.scalars(
        sa.select(OutboundEvent.data)
        .where(OutboundEvent.type == event_type)
        .order_by(OutboundEvent.occurred_at)
    )
    return list(rows)


async def test_rotations_leaks_and_revoking_everything_are_announced(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    in_tenant = {**vendor, "frontegg-tenant-id": credential.tenant_id}
    rotated = await client.post(
        f"{TENANT_API.path}/{credential.client_id}/rotate",
        headers=in_tenant,
        json={"overlapMinutes": 60},
    )
    assert rotated.status_code == 200, rotated.text
    ((rotation),) = await announced(db, events.TOKEN_ROTATED)
    assert rotation["id"] == credential.client_id
    assert rotation["kind"] == "tenantApiToken"
    assert rotation["tenantId"] == credential.tenant_id
    assert rotation["overlapMinutes"] == 60
    answered = datetime.fromisoformat(
        rotated.json()["previousSecretExpires"].replace("Z", "+00:00")
    )
    stops = datetime.fromisoformat(rotation["previousSecretExpires"])
    assert abs(stops - answered) < timedelta(milliseconds=1)  # the answer shows milliseconds

    leaked = await client.post(
        "/leaks", headers=vendor, json={"token": credential.secret, "url": "https://x.test/a"}
    )
    assert leaked.json()["outcome"] == "revoked", leaked.text
    ((leak),) = await announced(db, events.TOKEN_LEAKED)
    assert leak["id"] == credential.client_id
    assert (leak["action"], leak["reporter"], leak["url"]) == (
        "revoked",
        "vendor",
        "https://x.test/a",
    )
    assert credential.secret not in str(leak)

    revoked_all = await client.delete(
        f"/tenants/resources/tenants/v1/{credential.tenant_id}/tokens", headers=vendor
    )
    assert revoked_all.status_code == 200, revoked_all.text
    assert await announced(db, events.TOKENS_REVOKED) == [
        {"tenantId": credential.tenant_id, "reason": "revoke_all"}
    ]


async def test_expiry_warnings_skip_tokens_dead_by_a_revoke_all_or_a_deletion(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    soon = utcnow() + timedelta(days=3)
    revoked_tenant = await factory.tenant()
    deleted_tenant = await factory.tenant()
    kept_tenant = await factory.tenant()
    revoked_user = await factory.user(kept_tenant.id)
    deleted_user = await factory.user(kept_tenant.id)
    # Four tokens that die below, all expiring within the warnings' days.
    await add_credential(sessions, revoked_tenant.id, expires_at=soon)
    await add_access_token(sessions, kept_tenant.id, revoked_user.id, expires_at=soon)
    await add_credential(sessions, deleted_tenant.id, expires_at=soon)
    await add_access_token(sessions, kept_tenant.id, deleted_user.id, expires_at=soon)
    for gone in (
        f"/tenants/resources/tenants/v1/{revoked_tenant.id}/tokens",
        f"/identity/resources/users/v1/{revoked_user.id}/tokens",
        f"/identity/resources/users/v1/{deleted_user.id}",
        f"/tenants/resources/tenants/v1/{deleted_tenant.id}",
    ):
        # The cascades have not run: the rows are still there, dead.
        assert (await client.delete(gone, headers=vendor)).status_code in (200, 204)
    # Made after the revoke-all: alive, and warned about.
    alive = {
        await add_credential(sessions, revoked_tenant.id, expires_at=soon),
        await add_access_token(sessions, kept_tenant.id, revoked_user.id, expires_at=soon),
        await add_credential(sessions, kept_tenant.id, expires_at=soon),
    }

    counts = await run_job(job_context(services, sessions), jobs.WARN_EXPIRING_TOKENS)

    assert {data["id"] for data in await announced(db, events.TOKEN_EXPIRING)} == alive
    assert counts == {"warnings": 3}
