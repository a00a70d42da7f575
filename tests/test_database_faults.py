"""PostgreSQL going away and coming back while requests are in flight: its backends killed, the
server stopped and started again, one statement held past its timeout. Every route answers 503
with Retry-After (never 500, a wrong 200 or a hang), nothing half-written stays, and the service
serves again once PostgreSQL is back, without a restart; a job cut off mid-cascade resumes.

Stopping a server takes a PostgreSQL cluster of the test's own (`private_postgres`); killing
backends and holding locks happen on this run's database of the shared server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from standardwebhooks import Webhook

from api.app import create_app
from api.state import Services
from domain import jobs
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.jobs import JobContext
from domain.models import (
    AccessToken,
    ClientCredential,
    JobRun,
    RefreshToken,
    Tenant,
    User,
    access_token_roles,
    credential_roles,
)
from domain.settings import ConfigError, Settings, load_settings
from domain.validity import ValidityCache
from tests.factories import Factory, add_credential, add_refresh_tokens, build_scene
from tests.pages import session_jwt
from tests.processes import PrivatePostgres
from tests.steps import (
    CONFIG,
    EXCHANGE,
    OAUTH_REVOKE,
    OAUTH_TOKEN,
    REFRESH,
    TENANT_ACCESS,
    TENANT_API,
    TENANT_API_V2,
    USER_ACCESS,
    USER_API,
    VALIDATE,
    GitHubScanner,
    basic,
    configure,
    serving,
    tenant_credential,
)
from tests.suite import (
    REDIS_URL,
    VALID,
    VENDOR_CLIENT_ID,
    VENDOR_SECRET,
    WEBHOOK_SECRET,
    _plain_dsn,
)
from workers.inprocess import InProcessJobs

TENANTS = "/tenants/resources/tenants/v1"
TOKEN_POLICY = "/identity/resources/tenants/token-policy/v1"
UNAVAILABLE = {"errors": ["Service temporarily unavailable"]}
# Whatever fails, no request of these tests may take longer: a hang fails the test, not the run.
HANG_GUARD_SECONDS = 15


def assert_unavailable(response: httpx.Response) -> None:
    """503 with Retry-After, in the house shape."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json() == UNAVAILABLE


async def vendor_headers(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert response.status_code == 200, response.text
    return {"x-access-token": response.json()["token"]}


@asynccontextmanager
async def administrator(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, outside the app: it holds locks and kills backends."""
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        if not connection.is_closed():
            await connection.close()


async def waiting_on_locks(admin: asyncpg.Connection, count: int) -> list[int]:
    """The backends of requests blocked on a lock, once `count` of them are (polled, bounded)."""
    for _ in range(2000):
        # The statistics views keep one snapshot per transaction, and `admin` may be in one.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        pids: list[int] = [
            row["pid"]
            for row in await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        ]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.005)  # polling other processes, not standing in for time
    raise AssertionError(f"{count} requests never waited on the lock")


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        response = await request
    return response, loop.time() - start


def with_timeouts(settings: Settings, *, statement_ms: int, lock_ms: int) -> Settings:
    return dataclasses.replace(
        settings, database_statement_timeout_ms=statement_ms, database_lock_timeout_ms=lock_ms
    )


# --- the bounds every connection of the API carries -------------------------------------------


async def test_every_connection_of_the_api_bounds_its_statements_and_lock_waits(
    services: Services,
) -> None:
    async with services.engine.connect() as connection:
        statement = await connection.scalar(sa.text("SHOW statement_timeout"))
        lock = await connection.scalar(sa.text("SHOW lock_timeout"))

    assert (statement, lock) == ("5s", "2s")


@pytest.mark.parametrize(
    "variable", ["M2M_DATABASE_STATEMENT_TIMEOUT_MS", "M2M_DATABASE_LOCK_TIMEOUT_MS"]
)
@pytest.mark.parametrize("value", ["0", "99", "600001", "2s"])
def test_a_bound_out_of_range_is_refused_at_start_naming_its_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({**VALID, variable: value})

    assert refused.value.variable == variable
    assert value in str(refused.value)


def test_the_bounds_are_read_from_the_environment() -> None:
    read = load_settings(
        {
            **VALID,
            "M2M_DATABASE_STATEMENT_TIMEOUT_MS": "15000",
            "M2M_DATABASE_LOCK_TIMEOUT_MS": "500",
        }
    )

    assert (read.database_statement_timeout_ms, read.database_lock_timeout_ms) == (15000, 500)


# --- one statement held past its timeout ------------------------------------------------------


async def test_a_write_waiting_on_a_locked_row_answers_503_within_the_lock_timeout(
    settings: Settings, engine: AsyncEngine
) -> None:
    bounded = with_timeouts(settings, statement_ms=5000, lock_ms=300)
    async with (
        serving(bounded) as (_, client),
        administrator(_plain_dsn(settings.database_url)) as admin,
    ):
        vendor = await vendor_headers(client)
        async with admin.transaction():
            await admin.execute("SELECT * FROM environment FOR UPDATE")
            response, took = await timed(
                client.post(CONFIG, headers=vendor, json={"apiTokensEnabled": False})
            )
            unchanged = await client.get(CONFIG, headers=vendor)  # reads wait on no row lock
        after = await client.post(CONFIG, headers=vendor, json={"apiTokensEnabled": False})

    assert_unavailable(response)
    assert took < 2.0, f"answered after {took:.2f} s"
    assert unchanged.json()["apiTokensEnabled"] is True
    assert after.status_code == 201  # the lock released, the same request goes through


async def test_an_exchange_waiting_on_its_locked_credential_answers_503_in_its_route_shapes(
    settings: Settings, engine: AsyncEngine, factory: Factory
) -> None:
    bounded = with_timeouts(settings, statement_ms=5000, lock_ms=300)
    scene = await build_scene(factory)
    async with (
        serving(bounded) as (_, client),
        administrator(_plain_dsn(settings.database_url)) as admin,
    ):
        vendor = await vendor_headers(client)
        credential = await tenant_credential(
            client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
        )
        async with admin.transaction():
            await admin.execute(
                "SELECT * FROM client_credentials WHERE client_id = $1 FOR UPDATE",
                credential.client_id,
            )
            frontegg, _ = await timed(client.post(EXCHANGE, json=credential.body))
            oauth, took = await timed(
                client.post(
                    OAUTH_TOKEN,
                    data={"grant_type": "client_credentials"},
                    headers=basic(credential.client_id, credential.secret),
                )
            )
        after = await client.post(EXCHANGE, json=credential.body)

    assert_unavailable(frontegg)
    assert frontegg.headers["cache-control"] == "no-store"
    assert oauth.status_code == 503, oauth.text
    assert oauth.headers["retry-after"] == "1"
    assert oauth.headers["cache-control"] == "no-store"
    assert oauth.json()["error"] == "temporarily_unavailable"
    assert took < 2.0, f"answered after {took:.2f} s"
    assert after.status_code == 200, after.text


async def test_a_validation_waiting_on_a_locked_table_answers_503_then_200_once_released(
    settings: Settings, engine: AsyncEngine, factory: Factory
) -> None:
    bounded = with_timeouts(settings, statement_ms=5000, lock_ms=300)
    scene = await build_scene(factory)
    async with (
        serving(bounded) as (_, client),
        administrator(_plain_dsn(settings.database_url)) as admin,
    ):
        vendor = await vendor_headers(client)
        await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
        created = await client.post(
            TENANT_ACCESS, headers={**vendor, "frontegg-tenant-id": scene.tenant.id}, json={}
        )
        token = created.json()["secret"]
        async with admin.transaction():
            await admin.execute("LOCK TABLE access_tokens IN ACCESS EXCLUSIVE MODE")
            response, took = await timed(client.post(VALIDATE, headers={"X-API-KEY": token}))
        after = await client.post(VALIDATE, headers={"X-API-KEY": token})

    assert_unavailable(response)
    assert took < 2.0, f"answered after {took:.2f} s"
    assert after.status_code == 200, after.text


async def test_a_statement_running_past_the_statement_timeout_answers_503_and_stores_nothing(
    settings: Settings, engine: AsyncEngine, db: AsyncSession
) -> None:
    bounded = with_timeouts(settings, statement_ms=300, lock_ms=300)
    tenant_id = f"slow-{uuid.uuid4().hex[:8]}"
    async with administrator(_plain_dsn(settings.database_url)) as admin:
        # Every insert into tenants now runs for 30 s: a slow statement, not a lock wait.
        await admin.execute(
            "CREATE FUNCTION m2m_test_slow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;"
            " CREATE TRIGGER m2m_test_slow BEFORE INSERT ON tenants"
            " FOR EACH ROW EXECUTE FUNCTION m2m_test_slow()"
        )
        try:
            async with serving(bounded) as (_, client):
                vendor = await vendor_headers(client)
                response, took = await timed(
                    client.post(TENANTS, headers=vendor, json={"tenantId": tenant_id, "name": "S"})
                )
        finally:
            await admin.execute(
                "DROP TRIGGER m2m_test_slow ON tenants; DROP FUNCTION m2m_test_slow()"
            )

    assert_unavailable(response)
    assert took < 2.0, f"answered after {took:.2f} s"
    assert await db.get(Tenant, tenant_id) is None


# --- backends killed while requests are in flight ---------------------------------------------


async def test_requests_whose_backends_are_killed_answer_503_and_the_next_ones_succeed(
    settings: Settings, engine: AsyncEngine, factory: Factory, db: AsyncSession
) -> None:
    scene = await build_scene(factory)
    patient = with_timeouts(settings, statement_ms=10_000, lock_ms=10_000)
    new_tenant = f"killed-{uuid.uuid4().hex[:8]}"
    async with (
        serving(patient) as (_, client),
        administrator(_plain_dsn(settings.database_url)) as admin,
    ):
        vendor = await vendor_headers(client)
        tenant_headers = {**vendor, "frontegg-tenant-id": scene.tenant.id}
        requests: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: client.get(TENANTS, headers=vendor),
            lambda: client.get(f"{TENANTS}/{scene.tenant.id}", headers=vendor),
            lambda: client.post(
                TENANTS, headers=vendor, json={"tenantId": new_tenant, "name": "K"}
            ),
            lambda: client.post(TENANT_API_V2, headers=tenant_headers, json={}),
        ]
        async with admin.transaction():
            await admin.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
            in_flight = [asyncio.create_task(request()) for request in requests]
            pids = await waiting_on_locks(admin, len(requests))
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                killed = await asyncio.gather(*in_flight)
        again = [await request() for request in requests[:2]]

    for response in killed:
        assert_unavailable(response)
    assert [response.status_code for response in again] == [200, 200]
    assert await db.get(Tenant, new_tenant) is None  # the killed creation left nothing
    stored = await db.scalar(sa.select(sa.func.count()).select_from(ClientCredential))
    assert stored == 0


# --- a transaction that dies halfway ----------------------------------------------------------


def die_after(engine: AsyncEngine, statement_start: str) -> Callable[[], None]:
    """From now on, the app's connection that runs a statement starting with `statement_start`
    has its backend terminated right after it: its transaction dies halfway. Returns the undo."""

    def terminate(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(statement_start):
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    event.listen(engine.sync_engine, "after_cursor_execute", terminate)
    return lambda: event.remove(engine.sync_engine, "after_cursor_execute", terminate)


def die_at_commit(engine: AsyncEngine) -> Callable[[], None]:
    """From now on, every transaction of the app dies as it commits. Returns the undo."""

    def terminate(connection: Any) -> None:
        connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    event.listen(engine.sync_engine, "commit", terminate)
    return lambda: event.remove(engine.sync_engine, "commit", terminate)


@pytest.mark.parametrize(
    ("strategy", "path", "table", "links"),
    [
        ("AccessToken", TENANT_ACCESS, AccessToken, access_token_roles),
        ("ClientCredentials", TENANT_API_V2, ClientCredential, credential_roles),
    ],
)
@pytest.mark.parametrize("dies", ["after its insert", "as it commits"])
async def test_a_token_whose_transaction_dies_is_stored_whole_or_not_at_all(
    settings: Settings,
    engine: AsyncEngine,
    factory: Factory,
    db: AsyncSession,
    strategy: str,
    path: str,
    table: Any,
    links: sa.Table,
    dies: str,
) -> None:
    scene = await build_scene(factory)
    async with serving(settings) as (services, client):
        vendor = await vendor_headers(client)
        await configure(client, vendor, machineToMachineAuthStrategy=strategy)
        headers = {**vendor, "frontegg-tenant-id": scene.tenant.id}
        body = {"description": "half", "roleIds": [scene.reader.id]}
        undo = (
            die_after(services.engine, f"INSERT INTO {table.__tablename__}")
            if dies == "after its insert"
            else die_at_commit(services.engine)
        )
        try:
            response, _ = await timed(client.post(path, headers=headers, json=body))
        finally:
            undo()
        again = await client.post(path, headers=headers, json=body)

    assert_unavailable(response)
    assert again.status_code == 201, again.text
    rows = await db.scalar(sa.select(sa.func.count()).select_from(table))
    role_links = list(await db.execute(sa.select(links)))
    assert rows == 1  # the second creation's only
    assert len(role_links) == 1
    assert role_links[0].role_id == scene.reader.id


# --- PostgreSQL stopped and started again (a cluster of the test's own) -----------------------


@dataclasses.dataclass
class World:
    """What the routes below name: made while PostgreSQL is up."""

    vendor: dict[str, str]
    tenant_id: str
    user_id: str
    role_id: str
    access_token_id: str
    access_token: str
    client_id: str
    secret: str
    refresh_token: str
    # An end user's session (the portal's routes), when the test signs one.
    end_user: dict[str, str] = dataclasses.field(default_factory=dict)


async def build_world(client: httpx.AsyncClient) -> World:
    vendor = await vendor_headers(client)
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    assert (
        await client.post(TENANTS, headers=vendor, json={"tenantId": tenant_id, "name": "W"})
    ).status_code == 201
    in_tenant = {**vendor, "frontegg-tenant-id": tenant_id}
    role = await client.post(
        "/identity/resources/roles/v1",
        headers=vendor,
        json=[{"key": f"r{uuid.uuid4().hex[:6]}", "name": "R", "level": 1}],
    )
    user = await client.post(
        "/identity/resources/users/v2", headers=in_tenant, json={"email": "w@w.test"}
    )
    role_id = role.json()[0]["id"]
    credential = await tenant_credential(client, vendor, tenant_id, role_ids=[role_id])
    pair = await client.post(EXCHANGE, json=credential.body)
    await configure(client, vendor, machineToMachineAuthStrategy="AccessToken")
    access = await client.post(TENANT_ACCESS, headers=in_tenant, json={})
    return World(
        vendor=vendor,
        tenant_id=tenant_id,
        user_id=user.json()["id"],
        role_id=role_id,
        access_token_id=access.json()["id"],
        access_token=access.json()["secret"],
        client_id=credential.client_id,
        secret=credential.secret,
        refresh_token=pair.json()["refresh_token"],
    )


def signed_webhook(user_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"type": "user.deleted", "data": {"userId": user_id}})
    webhook_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    return body.encode(), {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(webhook_id, at, body),
        "content-type": "application/json",
    }


# Every route that reads or writes PostgreSQL: (method, path template, shape), and how to call it.
Call = Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]


def routes() -> dict[tuple[str, str], tuple[str, Call]]:
    users = "/identity/resources/users"
    roles = "/identity/resources/roles/v1"
    permissions = "/identity/resources/permissions/v1"
    vendor_only = "/identity/resources/vendor-only"
    events = "/events/endpoints"
    endpoint = events + "/{endpoint_id:str}"

    def in_tenant(w: World) -> dict[str, str]:
        return {**w.vendor, "frontegg-tenant-id": w.tenant_id}

    def as_user(w: World) -> dict[str, str]:
        return {**in_tenant(w), "frontegg-user-id": w.user_id}

    house, oauth, token = "house", "oauth", "token"
    return {
        ("GET", CONFIG): (house, lambda c, w: c.get(CONFIG, headers=w.vendor)),
        ("POST", CONFIG): (
            house,
            lambda c, w: c.post(CONFIG, headers=w.vendor, json={"apiTokensEnabled": True}),
        ),
        ("GET", TENANTS): (house, lambda c, w: c.get(TENANTS, headers=w.vendor)),
        ("POST", TENANTS): (
            house,
            lambda c, w: c.post(TENANTS, headers=w.vendor, json={"tenantId": "n", "name": "N"}),
        ),
        ("GET", TENANTS + "/{tenant_id:str}"): (
            house,
            lambda c, w: c.get(f"{TENANTS}/{w.tenant_id}", headers=w.vendor),
        ),
        ("DELETE", TENANTS + "/{tenant_id:str}"): (
            house,
            lambda c, w: c.delete(f"{TENANTS}/{w.tenant_id}", headers=w.vendor),
        ),
        ("POST", users + "/v2"): (
            house,
            lambda c, w: c.post(f"{users}/v2", headers=in_tenant(w), json={"email": "n@n.test"}),
        ),
        ("GET", users + "/v1/{user_id:str}"): (
            house,
            lambda c, w: c.get(f"{users}/v1/{w.user_id}", headers=w.vendor),
        ),
        ("DELETE", users + "/v1/{user_id:str}"): (
            house,
            lambda c, w: c.delete(f"{users}/v1/{w.user_id}", headers=w.vendor),
        ),
        ("POST", users + "/v1/{user_id:str}/roles"): (
            house,
            lambda c, w: c.post(
                f"{users}/v1/{w.user_id}/roles", headers=in_tenant(w), json={"roleIds": [w.role_id]}
            ),
        ),
        ("DELETE", users + "/v1/{user_id:str}/roles"): (
            house,
            lambda c, w: c.request(
                "DELETE",
                f"{users}/v1/{w.user_id}/roles",
                headers=in_tenant(w),
                json={"roleIds": [w.role_id]},
            ),
        ),
        ("PUT", users + "/v1/{user_id:str}"): (
            house,
            lambda c, w: c.put(f"{users}/v1/{w.user_id}", headers=w.vendor, json={"name": "N"}),
        ),
        ("GET", roles): (house, lambda c, w: c.get(roles, headers=w.vendor)),
        ("POST", roles): (
            house,
            lambda c, w: c.post(
                roles, headers=w.vendor, json=[{"key": "n", "name": "N", "level": 1}]
            ),
        ),
        ("PATCH", roles + "/{role_id:str}"): (
            house,
            lambda c, w: c.patch(f"{roles}/{w.role_id}", headers=w.vendor, json={"name": "M"}),
        ),
        ("DELETE", roles + "/{role_id:str}"): (
            house,
            lambda c, w: c.delete(f"{roles}/{w.role_id}", headers=w.vendor),
        ),
        ("PUT", roles + "/{role_id:str}/permissions"): (
            house,
            lambda c, w: c.put(
                f"{roles}/{w.role_id}/permissions", headers=w.vendor, json={"permissionIds": []}
            ),
        ),
        ("GET", permissions): (house, lambda c, w: c.get(permissions, headers=w.vendor)),
        ("POST", permissions): (
            house,
            lambda c, w: c.post(permissions, headers=w.vendor, json=[{"key": "n.n", "name": "N"}]),
        ),
        ("PATCH", permissions + "/{permission_id:str}"): (
            house,
            lambda c, w: c.patch(f"{permissions}/x", headers=w.vendor, json={"name": "N"}),
        ),
        ("DELETE", permissions + "/{permission_id:str}"): (
            house,
            lambda c, w: c.delete(f"{permissions}/x", headers=w.vendor),
        ),
        ("GET", CONFIG + "/basic"): (
            house,
            lambda c, w: c.get(CONFIG + "/basic", headers=w.vendor),
        ),
        **{
            (method, path): (house, call)
            for base, headers in (
                (USER_API, as_user),
                (USER_ACCESS, as_user),
                (TENANT_API, in_tenant),
                (TENANT_ACCESS, in_tenant),
            )
            for method, path, call in _token_routes(base, headers)
        },
        **{
            ("POST", base + "/{token_id:str}/rotate"): (
                house,
                lambda c, w, base=base, headers=headers: c.post(
                    f"{base}/{w.access_token_id}/rotate",
                    headers=headers(w),
                    json={"overlapMinutes": 60},
                ),
            )
            for base, headers in (
                (USER_API, as_user),
                (USER_ACCESS, as_user),
                (TENANT_API, in_tenant),
                (TENANT_ACCESS, in_tenant),
            )
        },
        **{
            ("DELETE", base + "/{token_id:str}/rotation"): (
                house,
                lambda c, w, base=base, headers=headers: c.delete(
                    f"{base}/{w.client_id}/rotation", headers=headers(w)
                ),
            )
            for base, headers in ((USER_API, as_user), (TENANT_API, in_tenant))
        },
        ("POST", TENANT_API_V2): (
            house,
            lambda c, w: c.post(TENANT_API_V2, headers=in_tenant(w), json={}),
        ),
        ("DELETE", USER_API + "/{token_id:str}/refresh-tokens"): (
            house,
            lambda c, w: c.delete(f"{USER_API}/{w.client_id}/refresh-tokens", headers=as_user(w)),
        ),
        ("DELETE", TENANT_API + "/{token_id:str}/refresh-tokens"): (
            house,
            lambda c, w: c.delete(
                f"{TENANT_API}/{w.client_id}/refresh-tokens", headers=in_tenant(w)
            ),
        ),
        ("DELETE", users + "/v1/{user_id:str}/tokens"): (
            house,
            lambda c, w: c.delete(f"{users}/v1/{w.user_id}/tokens", headers=w.vendor),
        ),
        ("DELETE", TENANTS + "/{tenant_id:str}/tokens"): (
            house,
            lambda c, w: c.delete(f"{TENANTS}/{w.tenant_id}/tokens", headers=w.vendor),
        ),
        ("GET", TOKEN_POLICY): (
            house,
            lambda c, w: c.get(TOKEN_POLICY, headers=in_tenant(w)),
        ),
        ("PUT", TOKEN_POLICY): (
            house,
            lambda c, w: c.put(
                TOKEN_POLICY, headers=in_tenant(w), json={"requireExpiration": True}
            ),
        ),
        ("PATCH", TENANT_API + "/{token_id:str}"): (
            house,
            lambda c, w: c.patch(
                f"{TENANT_API}/{w.client_id}", headers=in_tenant(w), json={"description": "d"}
            ),
        ),
        ("POST", EXCHANGE): (
            token,
            lambda c, w: c.post(EXCHANGE, json={"clientId": w.client_id, "secret": w.secret}),
        ),
        ("POST", "/identity/resources/auth/v1/api-token"): (
            token,
            lambda c, w: c.post(
                "/identity/resources/auth/v1/api-token",
                json={"clientId": w.client_id, "secret": w.secret},
            ),
        ),
        ("POST", REFRESH): (
            token,
            lambda c, w: c.post(REFRESH, json={"refreshToken": w.refresh_token}),
        ),
        ("POST", OAUTH_TOKEN): (
            oauth,
            lambda c, w: c.post(
                OAUTH_TOKEN,
                data={"grant_type": "client_credentials"},
                headers=basic(w.client_id, w.secret),
            ),
        ),
        ("POST", OAUTH_REVOKE): (
            oauth,
            lambda c, w: c.post(
                OAUTH_REVOKE, data={"token": w.refresh_token}, headers=basic(w.client_id, w.secret)
            ),
        ),
        ("POST", VALIDATE): (
            house,
            lambda c, w: c.post(VALIDATE, headers={"X-API-KEY": w.access_token}),
        ),
        ("POST", "/oauth/introspect"): (
            house,
            lambda c, w: c.post(
                "/oauth/introspect", headers=w.vendor, data={"token": w.access_token}
            ),
        ),
        ("GET", f"{vendor_only}/users/access-tokens/v1/active"): (
            house,
            lambda c, w: c.get(f"{vendor_only}/users/access-tokens/v1/active", headers=w.vendor),
        ),
        ("GET", f"{vendor_only}/tenants/access-tokens/v1/active"): (
            house,
            lambda c, w: c.get(f"{vendor_only}/tenants/access-tokens/v1/active", headers=w.vendor),
        ),
        ("GET", f"{vendor_only}/users/access-tokens/v1/{{token_id:str}}"): (
            house,
            lambda c, w: c.get(
                f"{vendor_only}/users/access-tokens/v1/{w.access_token_id}", headers=w.vendor
            ),
        ),
        ("GET", f"{vendor_only}/tenants/access-tokens/v1/{{token_id:str}}"): (
            house,
            lambda c, w: c.get(
                f"{vendor_only}/tenants/access-tokens/v1/{w.access_token_id}", headers=w.vendor
            ),
        ),
        ("POST", "/webhooks/users/deleted"): (house, post_user_deleted),
        ("POST", "/leaks"): (
            house,
            lambda c, w: c.post("/leaks", headers=w.vendor, json={"token": w.secret}),
        ),
        ("POST", "/leaks/github"): (house, post_github_leak),
        ("GET", "/ops/jobs"): (house, lambda c, w: c.get("/ops/jobs", headers=w.vendor)),
        ("GET", "/audits/v1"): (house, lambda c, w: c.get("/audits/v1", headers=w.vendor)),
        ("GET", "/metrics"): (house, lambda c, w: c.get("/metrics", headers=w.vendor)),
        ("GET", events): (house, lambda c, w: c.get(events, headers=w.vendor)),
        ("POST", events): (
            house,
            lambda c, w: c.post(
                events,
                headers=w.vendor,
                json={"url": "http://127.0.0.1:9/e", "eventTypes": ["test"]},
            ),
        ),
        ("GET", endpoint): (house, lambda c, w: c.get(f"{events}/e", headers=w.vendor)),
        ("PATCH", endpoint): (
            house,
            lambda c, w: c.patch(f"{events}/e", headers=w.vendor, json={"enabled": False}),
        ),
        ("DELETE", endpoint): (house, lambda c, w: c.delete(f"{events}/e", headers=w.vendor)),
        ("POST", endpoint + "/secret"): (
            house,
            lambda c, w: c.post(f"{events}/e/secret", headers=w.vendor),
        ),
        ("POST", endpoint + "/test"): (
            house,
            lambda c, w: c.post(f"{events}/e/test", headers=w.vendor),
        ),
        ("GET", endpoint + "/deliveries"): (
            house,
            lambda c, w: c.get(f"{events}/e/deliveries", headers=w.vendor),
        ),
        ("POST", endpoint + "/deliveries/{delivery_id:str}/redeliver"): (
            house,
            lambda c, w: c.post(f"{events}/e/deliveries/d/redeliver", headers=w.vendor),
        ),
        ("GET", "/portal/v1/session"): (
            house,
            lambda c, w: c.get("/portal/v1/session", headers=w.end_user),
        ),
        ("GET", "/portal/v1/token-creators"): (
            house,
            lambda c, w: c.get("/portal/v1/token-creators", headers=w.end_user),
        ),
        ("GET", "/console/v1/tenants"): (
            house,
            lambda c, w: c.get("/console/v1/tenants", headers=w.vendor),
        ),
        ("GET", "/console/v1/tenants/{tenant_id:str}/tokens"): (
            house,
            lambda c, w: c.get(f"/console/v1/tenants/{w.tenant_id}/tokens", headers=w.vendor),
        ),
    }


async def post_user_deleted(client: httpx.AsyncClient, world: World) -> httpx.Response:
    body, headers = signed_webhook(world.user_id)
    return await client.post("/webhooks/users/deleted", content=body, headers=headers)


# GitHub's side of /leaks/github: the every-route test's app reads these keys from a file.
GITHUB_SCANNER = GitHubScanner()


async def post_github_leak(client: httpx.AsyncClient, world: World) -> httpx.Response:
    body, headers = GITHUB_SCANNER.signed([{"token": world.secret, "type": "m2m_client_secret"}])
    return await client.post("/leaks/github", content=body, headers=headers)


def _token_routes(
    base: str, headers: Callable[[World], dict[str, str]]
) -> list[tuple[str, str, Call]]:
    return [
        ("GET", base, lambda c, w: c.get(base, headers=headers(w))),
        ("POST", base, lambda c, w: c.post(base, headers=headers(w), json={})),
        (
            "DELETE",
            base + "/{token_id:str}",
            lambda c, w: c.delete(f"{base}/{w.access_token_id}", headers=headers(w)),
        ),
    ]


# Routes that answer without PostgreSQL: from memory, or (readiness) by reporting it down.
WITHOUT_DATABASE = {
    ("POST", "/auth/vendor"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    # The event catalogue, and the revocation feed (Redis).
    ("GET", "/events/types"),
    ("GET", "/revocations/stream"),
    # The console's page and assets, and the limits it reads from the request schemas.
    ("GET", "/console"),
    ("GET", "/console/assets/{name:str}"),
    ("GET", "/console/v1/limits"),
    # The portal's page, its assets and the component.
    ("GET", "/portal"),
    ("GET", "/portal/assets/{name:str}"),
    ("GET", "/m2m-api-tokens.js"),
    # The API reference: its page, its assets, its document (JSON, YAML), and the not-found page
    # Litestar answers under /schema.
    ("GET", "/schema"),
    ("GET", "/schema/assets/{name:str}"),
    ("GET", "/schema/openapi.json"),
    ("GET", "/schema/openapi.yaml"),
    ("GET", "/schema/{path:str}"),
}


async def test_with_postgresql_stopped_every_route_answers_503_with_retry_after(
    private_postgres: PrivatePostgres,
    settings: Settings,
    idp_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    github_keys = tmp_path / "github-keys.json"
    github_keys.write_bytes(GITHUB_SCANNER.key_list())
    own = dataclasses.replace(
        settings,
        database_url=private_postgres.url,
        github_secret_scanning_keys_file=str(github_keys),
    )
    table = routes()
    served = {
        (method, route.path)
        for route in create_app(own).routes
        for handler in route.route_handlers
        for method in handler.http_methods
        if method != "OPTIONS"
    }
    async with serving(own) as (_, client):
        world = await build_world(client)
        session = session_jwt(idp_key, world.user_id, world.tenant_id)
        world.end_user = {"Authorization": f"Bearer {session}"}
        await asyncio.to_thread(private_postgres.stop)
        answers = {}
        for (method, path), (shape, call) in table.items():
            answers[(method, path)] = (shape, *(await timed(call(client, world))))

    assert served - WITHOUT_DATABASE == set(table), "a route missing from the table (or gone)"
    for route, (shape, response, took) in answers.items():
        assert response.status_code == 503, (route, response.text)
        assert response.headers["retry-after"] == "1", route
        assert took < 2.0, (route, took)
        if shape == "oauth":
            assert response.json()["error"] == "temporarily_unavailable", route
        else:
            assert response.json() == UNAVAILABLE, route
        if shape != "house":
            assert response.headers["cache-control"] == "no-store", route


async def test_requests_in_flight_when_postgresql_stops_answer_503_and_it_serves_again_on_return(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    own = with_timeouts(
        dataclasses.replace(settings, database_url=private_postgres.url),
        statement_ms=10_000,
        lock_ms=10_000,
    )
    new_tenant = f"stopped-{uuid.uuid4().hex[:8]}"
    async with serving(own) as (_, client):
        vendor = await vendor_headers(client)
        requests: list[Callable[[], Awaitable[httpx.Response]]] = [
            lambda: client.get(TENANTS, headers=vendor),
            lambda: client.get(CONFIG, headers=vendor),
            lambda: client.post(
                TENANTS, headers=vendor, json={"tenantId": new_tenant, "name": "S"}
            ),
        ]
        async with administrator(private_postgres.dsn) as admin:
            await admin.execute("BEGIN; LOCK TABLE tenants, environment IN ACCESS EXCLUSIVE MODE")
            in_flight = [asyncio.create_task(request()) for request in requests]
            await waiting_on_locks(admin, len(requests))
            await asyncio.to_thread(private_postgres.stop)
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            cut_off = await asyncio.gather(*in_flight)
        while_stopped, took_while_stopped = await timed(client.get(TENANTS, headers=vendor))

        await asyncio.to_thread(private_postgres.start)
        loop = asyncio.get_running_loop()
        back_at = loop.time()
        tries = []
        for _ in range(3):
            tries.append((await client.get(TENANTS, headers=vendor)).status_code)
            if tries[-1] == 200:
                break
        served_again_after = loop.time() - back_at
        listed = await client.get(TENANTS, headers=vendor)

    for response in [*cut_off, while_stopped]:
        assert_unavailable(response)
    assert took_while_stopped < 1.0
    assert tries == [200], tries  # no restart, no stale connection served a 503
    assert served_again_after < 2.0
    assert new_tenant not in {tenant["tenantId"] for tenant in listed.json()}


async def test_a_request_whose_postgresql_stops_answering_altogether_answers_503_within_its_bound(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    """A frozen server (or one the network cut off) cancels nothing: the driver gives up."""
    own = with_timeouts(
        dataclasses.replace(settings, database_url=private_postgres.url),
        statement_ms=300,
        lock_ms=300,
    )
    async with serving(own) as (_, client):
        vendor = await vendor_headers(client)
        assert (await client.get(TENANTS, headers=vendor)).status_code == 200
        async with administrator(private_postgres.dsn) as admin:
            frozen = await admin.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            private_postgres.freeze([row["pid"] for row in frozen])
            try:
                response, took = await timed(client.get(TENANTS, headers=vendor))
            finally:
                private_postgres.thaw([row["pid"] for row in frozen])
        after = await client.get(TENANTS, headers=vendor)

    assert frozen, "the app's pooled connection"
    assert_unavailable(response)
    # 0.3 s of statement timeout, 2 s more before the driver gives up, 2 s to close it.
    assert took < 6.0, f"answered after {took:.2f} s"
    assert after.status_code == 200


async def test_while_postgresql_shuts_down_requests_needing_a_new_connection_answer_503(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    own = dataclasses.replace(settings, database_url=private_postgres.url)
    async with serving(own) as (services, client):
        vendor = await vendor_headers(client)
        async with administrator(private_postgres.dsn):
            # A smart shutdown waits for this session to end, refusing new ones meanwhile.
            await asyncio.to_thread(private_postgres.stop, "smart", wait=False)
            await private_postgres.refusing_connections()
            await services.engine.dispose()  # every request from here needs a new connection
            response, took = await timed(client.get(TENANTS, headers=vendor))
        await asyncio.to_thread(private_postgres.wait_stopped)
        await asyncio.to_thread(private_postgres.start)
        after = await client.get(TENANTS, headers=vendor)

    assert_unavailable(response)
    assert took < 2.0
    assert after.status_code == 200


# --- jobs -------------------------------------------------------------------------------------


async def test_a_cascade_whose_database_stops_mid_batch_resumes_and_loses_nothing(
    private_postgres: PrivatePostgres, settings: Settings
) -> None:
    total = 2000
    jobs_engine = create_engine(private_postgres.url, pooled=False)
    sessions = create_session_factory(jobs_engine)
    factory = Factory(sessions)
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    survivor = await factory.user(tenant.id)
    now = utcnow()
    token_ids = [str(uuid.uuid4()) for _ in range(total)]
    async with sessions() as session:
        await session.execute(
            sa.insert(AccessToken),
            [
                {"id": i, "tenant_id": tenant.id, "user_id": user.id, "created_at": now}
                for i in token_ids
            ],
        )
        await session.commit()
    client_ids = [await add_credential(sessions, tenant.id, user.id) for _ in range(3)]
    for client_id in client_ids:
        await add_refresh_tokens(sessions, client_id, 2)
    kept = await add_credential(sessions, tenant.id, survivor.id)
    async with sessions() as session:
        await session.execute(sa.update(User).where(User.id == user.id).values(deleted_at=now))
        await session.commit()
    redis = Redis.from_url(REDIS_URL)
    prefix = f"{settings.redis_prefix}{uuid.uuid4().hex[:8]}:"
    validity = ValidityCache(redis=redis, sessions=sessions, prefix=prefix)
    runner = InProcessJobs(
        JobContext(sessions=sessions, validity=validity, clock=utcnow, batch_size=10),
        schedules=(),
    )
    owned = "SELECT count(*) FROM access_tokens WHERE user_id = $1"
    try:
        async with administrator(private_postgres.dsn) as admin:
            await runner.enqueue(jobs.CASCADE_DELETIONS, user_id=user.id)
            for _ in range(2000):  # polling the job's progress, bounded
                if await admin.fetchval(owned, user.id) < total:
                    break
                await asyncio.sleep(0.005)
            await asyncio.to_thread(private_postgres.stop)
        await asyncio.to_thread(private_postgres.start)
        async with asyncio.timeout(30):
            await runner.drain()  # the runner's own retries, as a worker's

        async with sessions() as session:
            left = await session.scalar(
                sa.select(sa.func.count())
                .select_from(AccessToken)
                .where(AccessToken.user_id == user.id)
            )
            credentials = list(await session.scalars(sa.select(ClientCredential.client_id)))
            refresh = await session.scalar(sa.select(sa.func.count()).select_from(RefreshToken))
            runs = list(
                await session.scalars(
                    sa.select(JobRun)
                    .where(JobRun.job == jobs.CASCADE_DELETIONS)
                    .order_by(JobRun.started_at)
                )
            )
            deleted_user = await session.get(User, user.id)
        tombstones = await redis.mget([f"{prefix}v:at:{i}" for i in token_ids])
    finally:
        await runner.close()
        await redis.aclose()
        await jobs_engine.dispose()

    assert left == 0
    assert credentials == [kept]
    assert refresh == 0
    assert deleted_user is None
    assert set(tombstones) == {b"-"}  # every deleted token refused by every API process
    success = [run for run in runs if run.outcome == "success"]
    assert len(success) == 1
    # It resumed: the batches committed before the fault stayed done, and were not counted again.
    assert 0 < success[0].counts["access_tokens"] < total
    assert success[0].counts["users"] == 1
