"""The audit trail (the README's "Audit trail"): who did what, on what, when, from where, read by
the vendor for every account and by an account admin for its own, filtered and paged."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import job_runs, jobs
from domain.clock import utcnow
from domain.jobs import JobContext
from domain.models import AuditEvent
from tests.factories import Factory, add_access_token
from tests.steps import (
    TENANT_ACCESS,
    client_at,
    configure,
    create_access_token,
    delete_token,
    exchange_ok,
    simple_credential,
)
from tests.suite import both_backends

pytestmark = both_backends

AUDITS = "/audits/v1"
READ_AUDITS = "fe.secure.read.audits"


def soon() -> datetime:
    """A minute from now: the vendor's token (issued now, valid an hour) holds at every frozen
    time a test derives from it."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def trail(client: httpx.AsyncClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    response = await client.get(AUDITS, headers=headers, params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def every_page(
    client: httpx.AsyncClient, headers: dict[str, str], **query: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await trail(client, headers, **query, **({"cursor": cursor} if cursor else {}))
        items.extend(page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            return items


async def test_an_entry_says_who_did_what_to_which_token_when_from_where_with_the_request_id(
    app: Litestar, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    t0 = soon()
    async with client_at(app, "192.0.2.44") as client:
        await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
        with freeze_time(t0, real_asyncio=True):
            response = await client.post(
                TENANT_ACCESS,
                headers={**vendor, "frontegg-tenant-id": tenant.id, "X-Request-ID": "create-1"},
                json={"roleIds": []},
            )
        assert response.status_code == 201, response.text
        token_id = response.json()["id"]

        page = await trail(client, vendor, tenantId=tenant.id, action="token.created")

    assert page == {
        "items": [
            {
                "id": page["items"][0]["id"],
                "at": iso(t0),
                "action": "token.created",
                "actor": {"type": "vendor", "id": None, "address": "192.0.2.44"},
                "target": {"type": "access_token", "id": token_id},
                "tenantId": tenant.id,
                "requestId": "create-1",
                "details": page["items"][0]["details"],
            }
        ],
        "nextCursor": None,
    }
    assert page["items"][0]["details"]["kind"] == "tenantAccessToken"
    assert "secret" not in str(page["items"][0]["details"])


async def test_pages_follow_the_cursor_newest_first_without_gaps_or_repeats(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    created = [(await create_access_token(client, vendor, tenant.id))["id"] for _ in range(5)]

    first = await trail(client, vendor, tenantId=tenant.id, action="token.created", limit=2)
    assert len(first["items"]) == 2
    assert first["nextCursor"] is not None
    # A new event meanwhile does not shift the pages already handed out.
    late = (await create_access_token(client, vendor, tenant.id))["id"]
    rest = await every_page(client, vendor, tenantId=tenant.id, action="token.created", limit=2)
    assert [item["target"]["id"] for item in rest] == [late, *reversed(created)]
    second = await trail(
        client, vendor, tenantId=tenant.id, action="token.created", limit=2,
        cursor=first["nextCursor"],
    )  # fmt: skip
    assert [item["target"]["id"] for item in first["items"] + second["items"]] == list(
        reversed(created)
    )[:4]


async def test_filters_by_account_user_token_action_and_time(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    tenant = await factory.tenant()
    other = await factory.tenant(name="Other")
    user = await factory.user(tenant.id)
    t0 = soon()
    with freeze_time(t0, real_asyncio=True):
        early = await create_access_token(client, vendor, tenant.id)
    with freeze_time(t0 + timedelta(minutes=10), real_asyncio=True):
        personal = await create_access_token(client, vendor, tenant.id, user_id=user.id)
        elsewhere = await create_access_token(client, vendor, other.id)
    with freeze_time(t0 + timedelta(minutes=20), real_asyncio=True):
        await delete_token(client, vendor, TENANT_ACCESS, early["id"], tenant.id)

    def targets(page: dict[str, Any]) -> list[tuple[str, str]]:
        return [(item["action"], item["target"]["id"]) for item in page["items"]]

    assert targets(await trail(client, vendor, tenantId=other.id)) == [
        ("token.created", elsewhere["id"])
    ]
    assert targets(await trail(client, vendor, tokenId=early["id"])) == [
        ("token.deleted", early["id"]),
        ("token.created", early["id"]),
    ]
    assert targets(await trail(client, vendor, userId=user.id)) == [
        ("token.created", personal["id"])
    ]
    assert targets(await trail(client, vendor, tenantId=tenant.id, action="token.deleted")) == [
        ("token.deleted", early["id"])
    ]
    window = await trail(
        client,
        vendor,
        tenantId=tenant.id,
        **{
            "from": (t0 + timedelta(minutes=5)).isoformat(),
            "to": (t0 + timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
        },
    )
    assert targets(window) == [("token.created", personal["id"])]


async def test_an_account_admin_reads_only_its_own_accounts_trail(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    other = await factory.tenant(name="Other")
    auditor = await factory.role(tenant_id=tenant.id, permission_keys=[READ_AUDITS])
    admin = await factory.user(tenant.id, roles=[auditor])
    mine = await create_access_token(client, vendor, tenant.id)
    await create_access_token(client, vendor, other.id)
    headers = end_user(admin.id, tenant.id)

    everything = await every_page(client, headers)
    assert {item["tenantId"] for item in everything} == {tenant.id}
    assert mine["id"] in {item["target"]["id"] for item in everything}

    refused = await client.get(AUDITS, headers=headers, params={"tenantId": other.id})
    assert refused.status_code == 404, refused.text
    same = await trail(client, headers, tenantId=tenant.id)
    assert same["items"] == (await trail(client, headers))["items"]


async def test_a_member_without_the_audit_permission_is_refused(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    reader = await factory.role(
        tenant_id=tenant.id, permission_keys=["fe.secure.read.tenantApiTokens"]
    )
    member = await factory.user(tenant.id, roles=[reader])

    response = await client.get(AUDITS, headers=end_user(member.id, tenant.id))
    assert response.status_code == 403, response.text
    assert READ_AUDITS in response.text
    assert (await client.get(AUDITS)).status_code == 401


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"a1:-5").decode()}, "cursor"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-11-30T10:00:00"}, "to"),  # no offset: which zone is unknown
        ({"from": "2026-11-30T11:00:00Z", "to": "2026-11-30T10:00:00Z"}, "before"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"action": "x" * 300}, "action"),
        ({"userId": ""}, "userId"),
    ],
)
async def test_bad_queries_are_refused_with_400(
    client: httpx.AsyncClient, vendor: dict[str, str], query: dict[str, str], says: str
) -> None:
    response = await client.get(AUDITS, headers=vendor, params=query)
    assert response.status_code == 400, response.text
    assert says in response.text


async def test_a_request_nobody_authenticated_is_recorded_as_the_system_with_its_address(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    pair = await exchange_ok(client, credential)
    refresh = {"refreshToken": pair["refresh_token"]}
    path = "/identity/resources/auth/v2/api-token/token/refresh"
    assert (await client.post(path, json=refresh)).status_code == 200
    reused = await client.post(path, json=refresh, headers={"X-Request-ID": "replayed"})
    assert reused.status_code == 401

    page = await trail(client, vendor, tokenId=credential.client_id)
    (reuse,) = [item for item in page["items"] if item["requestId"] == "replayed"]
    assert reuse["actor"] == {"type": "system", "id": None, "address": "127.0.0.1"}
    assert reuse["details"]["clientId"] == credential.client_id
    stored = await db.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    assert stored is not None
    assert stored >= 2


async def test_a_jobs_changes_name_the_job_and_no_address(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await factory.tenant()
    token_id = await add_access_token(
        sessions, tenant.id, expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    context = JobContext(sessions=sessions, validity=services.validity, clock=utcnow)
    await job_runs.run_job(context, jobs.EXPIRE_TOKENS)

    (expired,) = (await trail(client, vendor, tokenId=token_id))["items"]
    assert expired["action"] == "access_token.expired"
    assert expired["actor"] == {"type": "job", "id": jobs.EXPIRE_TOKENS, "address": None}
    assert expired["requestId"] is None
