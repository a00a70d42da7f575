"""POST /webhooks/users/deleted, signed by the Standard Webhooks reference implementation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook

from api.state import Services
from domain.models import AccessToken, AuditEvent, User, WebhookDelivery
from domain.webhooks import WebhooksNotConfigured, verify_signature
from tests.factories import Factory, build_scene
from tests.steps import api_key, create_access_token, finish_jobs, validate
from tests.suite import WEBHOOK_SECRET

PATH = "/webhooks/users/deleted"


def signed(
    payload: Any,
    *,
    secret: str = WEBHOOK_SECRET,
    webhook_id: str | None = None,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers a Standard Webhooks sender would send."""
    body = json.dumps(payload)
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, at, body)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


def user_deleted(user_id: str, **data: Any) -> dict[str, Any]:
    return {
        "type": "user.deleted",
        "timestamp": "2026-11-23T00:00:00Z",
        "data": {"userId": user_id, **data},
    }


async def test_a_signed_user_deletion_invalidates_the_users_tokens_before_answering(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    doomed = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    spared = await create_access_token(client, vendor, scene.tenant.id)
    assert (await validate(client, api_key(doomed["secret"]))).status_code == 200
    body, headers = signed(user_deleted(scene.user.id, tenantId=scene.tenant.id))

    response = await client.post(PATH, content=body, headers=headers)
    refused = await validate(client, api_key(doomed["secret"]))
    await finish_jobs(services)

    assert response.status_code == 204, response.text
    assert refused.status_code == 401
    assert await db.get(User, scene.user.id) is None
    assert list(await db.scalars(sa.select(AccessToken.id))) == [spared["id"]]
    assert (await validate(client, api_key(spared["secret"]))).status_code == 200


async def test_a_user_deletion_by_webhook_is_audited_as_the_system_with_its_address_and_id(
    client: httpx.AsyncClient, factory: Factory, db: AsyncSession
) -> None:
    scene = await build_scene(factory)
    body, headers = signed(user_deleted(scene.user.id))

    response = await client.post(PATH, content=body, headers={**headers, "X-Request-ID": "idp-1"})
    assert response.status_code == 204, response.text

    (event,) = await db.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.deleted"))
    assert (event.actor_type, event.actor_id, event.target_id) == ("system", None, scene.user.id)
    assert (event.actor_address, event.request_id) == ("127.0.0.1", "idp-1")


async def test_a_replayed_webhook_id_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id, user_id="u-replayed")
    body, headers = signed(user_deleted(user.id))
    first = await client.post(PATH, content=body, headers=headers)
    await finish_jobs(services)
    # The same person is added again (same id); the old event comes back.
    again = await client.post(
        "/identity/resources/users/v2",
        headers={**vendor, "frontegg-tenant-id": tenant.id},
        json={"id": user.id, "email": "back@acme.test", "metadata": "{}"},
    )
    assert again.status_code == 201, again.text

    replay = await client.post(PATH, content=body, headers=headers)
    await finish_jobs(services)

    assert first.status_code == 204
    assert replay.status_code == 204
    assert (
        await client.get(f"/identity/resources/users/v1/{user.id}", headers=vendor)
    ).status_code == 200


async def test_an_unknown_user_is_answered_204_and_its_id_remembered(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    body, headers = signed(user_deleted("nobody"))

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 204
    assert list(await db.scalars(sa.select(WebhookDelivery.id))) == [headers["webhook-id"]]


def _tamper(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "webhook-signature": "v1," + "A" * 44}


@pytest.mark.parametrize(
    ("name", "mangle"),
    [
        ("wrong signature", _tamper),
        ("wrong secret", None),
        ("no signature", lambda h: {k: v for k, v in h.items() if k != "webhook-signature"}),
        ("no id", lambda h: {k: v for k, v in h.items() if k != "webhook-id"}),
        ("no timestamp", lambda h: {k: v for k, v in h.items() if k != "webhook-timestamp"}),
        ("garbage signature", lambda h: {**h, "webhook-signature": "v1"}),
        ("other id than signed", lambda h: {**h, "webhook-id": "msg_other"}),
        ("unversioned signature", lambda h: {**h, "webhook-signature": "abc,def ghi"}),
    ],
)
async def test_a_bad_or_missing_signature_is_401_and_deletes_nothing(
    client: httpx.AsyncClient,
    factory: Factory,
    db: AsyncSession,
    name: str,
    mangle: Any,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    if mangle is None:
        other = "whsec_" + "c2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ=="
        body, headers = signed(user_deleted(user.id), secret=other)
    else:
        body, headers = signed(user_deleted(user.id))
        headers = mangle(headers)

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 401, name
    assert response.json() == {"errors": ["Invalid webhook signature"]}
    stored = await db.get(User, user.id)
    assert stored is not None
    assert stored.deleted_at is None
    assert await db.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_a_timestamp_outside_five_minutes_is_401(
    client: httpx.AsyncClient, factory: Factory, db: AsyncSession, offset: timedelta
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    body, headers = signed(user_deleted(user.id), at=datetime.now(UTC) + offset)

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 401
    stored = await db.get(User, user.id)
    assert stored is not None
    assert stored.deleted_at is None


async def test_a_timestamp_within_five_minutes_is_accepted(
    client: httpx.AsyncClient, factory: Factory, services: Services
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    body, headers = signed(user_deleted(user.id), at=datetime.now(UTC) - timedelta(minutes=4))

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 204


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "user.created", "data": {"userId": "u-1"}},
        {"type": "user.deleted", "data": {}},
        {"type": "user.deleted", "data": {"userId": 7}},
        {"type": "user.deleted", "data": {"userId": ""}},
        {"type": "user.deleted", "data": {"userId": "u-1", "tenantId": ["t"]}},
        {"type": "user.deleted"},
        ["user.deleted"],
    ],
)
async def test_a_signed_event_of_the_wrong_shape_is_400_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory, db: AsyncSession, payload: Any
) -> None:
    tenant = await factory.tenant()
    await factory.user(tenant.id, user_id="u-1")
    body, headers = signed(payload)

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["errors"]
    stored = await db.get(User, "u-1")
    assert stored is not None
    assert stored.deleted_at is None


async def test_a_signed_body_that_is_not_json_is_400(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    at = datetime.now(UTC)
    body, headers = signed("ignored", at=at)
    body = b"{not json"
    headers["webhook-signature"] = Webhook(WEBHOOK_SECRET).sign(
        headers["webhook-id"], at, body.decode()
    )

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json() == {"errors": ["The event must be a JSON object"]}
    assert await db.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


async def test_a_user_of_another_tenant_than_the_event_names_is_not_deleted(
    client: httpx.AsyncClient, factory: Factory, db: AsyncSession
) -> None:
    tenant = await factory.tenant()
    other = await factory.tenant()
    user = await factory.user(tenant.id)
    body, headers = signed(user_deleted(user.id, tenantId=other.id))

    response = await client.post(PATH, content=body, headers=headers)

    assert response.status_code == 204
    stored = await db.get(User, user.id)
    assert stored is not None
    assert stored.deleted_at is None


def test_without_a_webhook_secret_no_event_is_accepted() -> None:
    body, headers = signed(user_deleted("u-1"))

    with pytest.raises(WebhooksNotConfigured) as refused:
        verify_signature(None, headers, body)

    assert str(refused.value) == "Webhooks are not accepted: M2M_WEBHOOK_SECRET is not set"


@pytest.mark.parametrize("depth", [500, 5_000])
async def test_a_signed_body_nested_deeply_is_400_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory, db: AsyncSession, depth: int
) -> None:
    tenant = await factory.tenant()
    await factory.user(tenant.id, user_id="u-1")
    at = datetime.now(UTC)
    _, headers = signed("ignored", at=at)
    # A user.deleted event whose data also carries a value nested `depth` levels deep.
    deep = "[" * depth + "]" * depth
    text = '{"type": "user.deleted", "data": {"userId": "u-1", "extra": ' + deep + "}}"
    headers["webhook-signature"] = Webhook(WEBHOOK_SECRET).sign(headers["webhook-id"], at, text)

    response = await client.post(PATH, content=text.encode(), headers=headers)

    assert response.status_code == 400, response.text
    assert response.json()["errors"]
    assert await db.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
    stored = await db.get(User, "u-1")
    assert stored is not None
    assert stored.deleted_at is None
