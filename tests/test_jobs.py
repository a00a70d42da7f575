"""The five background jobs (the README's "Background jobs and monitoring") as domain services:
what each leaves behind, twice or at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import job_runs, jobs
from domain.clock import utcnow
from domain.jobs import JobContext
from domain.models import (
    AccessToken,
    AuditEvent,
    ClientCredential,
    JobRun,
    JobStat,
    RefreshToken,
    Tenant,
    User,
)
from domain.settings import Settings
from tests.factories import (
    Factory,
    add_access_token,
    add_credential,
    add_refresh_tokens,
    build_scene,
)
from tests.steps import (
    api_key,
    bearer,
    configure,
    create_access_token,
    create_credential,
    credential_jwt,
    finish_jobs,
    validate,
)
from tests.suite import both_backends, serve_only

# The same jobs run on Celery (serve) and in-process (dev): the same end states on both.
pytestmark = both_backends


def context(
    services: Services, sessions: async_sessionmaker[AsyncSession], batch_size: int = 3
) -> JobContext:
    return JobContext(
        sessions=sessions, validity=services.validity, clock=utcnow, batch_size=batch_size
    )


async def refresh_ids(db: AsyncSession, client_id: str) -> set[str]:
    return set(
        await db.scalars(sa.select(RefreshToken.id).where(RefreshToken.client_id == client_id))
    )


# --- expire tokens --------------------------------------------------------------------------


async def test_an_expired_token_is_refused_before_the_expiry_job_runs(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    assert (await validate(client, api_key(token["secret"]))).status_code == 200

    with freeze_time(datetime.now(UTC) + timedelta(minutes=2), real_asyncio=True):
        late = await validate(client, api_key(token["secret"]))

    assert late.status_code == 401


async def test_expiry_marks_expired_tokens_deletes_their_refresh_tokens_and_is_audited(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    expiring = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    lasting = await create_access_token(client, vendor, scene.tenant.id, minutes=60)
    soon = utcnow() + timedelta(minutes=1)
    expiring_credential = await add_credential(sessions, scene.tenant.id, expires_at=soon)
    lasting_credential = await add_credential(sessions, scene.tenant.id)
    doomed_refresh = await add_refresh_tokens(sessions, expiring_credential, 3)
    kept_refresh = await add_refresh_tokens(sessions, lasting_credential, 2)

    with freeze_time(datetime.now(UTC) + timedelta(minutes=2), real_asyncio=True):
        first = await jobs.expire_tokens(context(services, sessions))
        second = await jobs.expire_tokens(context(services, sessions))
        still_valid = await validate(client, api_key(lasting["secret"]))

    assert first["access_tokens"] == 1
    assert first["credentials"] == 1
    assert first["refresh_tokens"] == 3
    assert (second["access_tokens"], second["credentials"], second["refresh_tokens"]) == (0, 0, 0)
    marked = await db.get(AccessToken, expiring["id"])
    assert marked is not None
    assert marked.expired_at is not None
    unmarked = await db.get(AccessToken, lasting["id"])
    assert unmarked is not None
    assert unmarked.expired_at is None
    assert await refresh_ids(db, expiring_credential) == set()
    assert await refresh_ids(db, lasting_credential) == set(kept_refresh)
    assert set(doomed_refresh).isdisjoint(await refresh_ids(db, expiring_credential))
    expired = {
        (entry.action, entry.target_id, entry.tenant_id, entry.details["kind"])
        for entry in await db.scalars(
            sa.select(AuditEvent).where(AuditEvent.action.like("%.expired"))
        )
    }
    # In the account's trail, with the kind: its admins and the console's activity see them.
    assert expired == {
        ("access_token.expired", expiring["id"], scene.tenant.id, "tenantAccessToken"),
        ("client_credential.expired", expiring_credential, scene.tenant.id, "tenantApiToken"),
    }
    trail = await client.get(f"/audits/v1?tenantId={scene.tenant.id}", headers=vendor)
    assert {"access_token.expired", "client_credential.expired"} <= {
        item["action"] for item in trail.json()["items"]
    }
    assert still_valid.status_code == 200


async def test_two_expiry_runs_at_once_mark_each_token_once(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    past = utcnow() - timedelta(minutes=1)
    for _ in range(20):
        await add_access_token(sessions, tenant.id, expires_at=past)
        await add_credential(sessions, tenant.id, expires_at=past)

    runs = await asyncio.gather(
        jobs.expire_tokens(context(services, sessions, batch_size=4)),
        jobs.expire_tokens(context(services, sessions, batch_size=4)),
    )

    assert sum(run["access_tokens"] for run in runs) == 20
    assert sum(run["credentials"] for run in runs) == 20
    audited = await db.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    assert audited == 40
    unmarked = await db.scalar(
        sa.select(sa.func.count()).select_from(AccessToken).where(AccessToken.expired_at.is_(None))
    )
    assert unmarked == 0


# --- prune refresh tokens -------------------------------------------------------------------


async def test_pruning_leaves_exactly_the_newest_100_usable_refresh_tokens(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    crowded = await add_credential(sessions, tenant.id)
    other = await add_credential(sessions, tenant.id)
    usable = await add_refresh_tokens(sessions, crowded, 150)
    others = await add_refresh_tokens(sessions, other, 5)

    counts = await jobs.prune_refresh_tokens(context(services, sessions, batch_size=7))

    assert counts == {"refresh_tokens": 50}
    assert await refresh_ids(db, crowded) == set(usable[50:])
    assert await refresh_ids(db, other) == set(others)


async def test_pruning_deletes_revoked_expired_and_dead_used_tokens_but_keeps_reuse_evidence(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    client_id = await add_credential(sessions, tenant.id)
    revoked = await add_refresh_tokens(sessions, client_id, 2, revoked=True)
    expired = await add_refresh_tokens(
        sessions, client_id, 2, start=utcnow() - timedelta(days=2), lifetime=timedelta(days=1)
    )
    dead_family_used = await add_refresh_tokens(sessions, client_id, 2, used=True)
    family = str(uuid.uuid4())
    live_family_used = await add_refresh_tokens(sessions, client_id, 1, used=True, family_id=family)
    live_family_head = await add_refresh_tokens(sessions, client_id, 1, family_id=family)

    first = await jobs.prune_refresh_tokens(context(services, sessions), client_id=client_id)
    second = await jobs.prune_refresh_tokens(context(services, sessions), client_id=client_id)

    assert first == {"refresh_tokens": len(revoked) + len(expired) + len(dead_family_used)}
    assert second == {"refresh_tokens": 0}
    assert await refresh_ids(db, client_id) == set(live_family_used + live_family_head)


async def test_two_prunes_at_once_reach_the_same_end_state(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    client_id = await add_credential(sessions, tenant.id)
    usable = await add_refresh_tokens(sessions, client_id, 130)
    await add_refresh_tokens(sessions, client_id, 20, revoked=True)

    runs = await asyncio.gather(
        jobs.prune_refresh_tokens(context(services, sessions, batch_size=5)),
        jobs.prune_refresh_tokens(context(services, sessions, batch_size=5)),
    )

    assert sum(run["refresh_tokens"] for run in runs) == 50
    assert await refresh_ids(db, client_id) == set(usable[30:])


async def test_an_exchange_enqueues_the_prune_of_its_credential(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    await add_refresh_tokens(sessions, credential["clientId"], 3, revoked=True)
    await finish_jobs(services)  # what the creation enqueued (its token.created event)
    before = len(list(await db.scalars(sa.select(JobRun.job))))

    exchanged = await client.post(
        "/identity/resources/auth/v2/api-token",
        json={"clientId": credential["clientId"], "secret": credential["secret"]},
    )
    await finish_jobs(services)

    assert exchanged.status_code == 200, exchanged.text
    remaining = list(
        await db.scalars(
            sa.select(RefreshToken.revoked_at).where(
                RefreshToken.client_id == credential["clientId"]
            )
        )
    )
    assert remaining == [None]
    runs = list(await db.scalars(sa.select(JobRun.job).order_by(JobRun.started_at)))
    assert runs[before:] == [jobs.PRUNE_REFRESH_TOKENS]


# --- user and tenant deletion cascade --------------------------------------------------------


@serve_only  # reads Redis
async def test_the_cascade_removes_every_row_and_cache_entry_of_the_user_and_nothing_else(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    colleague = await factory.user(scene.tenant.id, roles=[scene.reader])
    doomed_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    colleague_token = await create_access_token(
        client, vendor, scene.tenant.id, user_id=colleague.id
    )
    tenant_token = await create_access_token(client, vendor, scene.tenant.id)
    bulk_tokens = [
        await add_access_token(sessions, scene.tenant.id, scene.user.id) for _ in range(10)
    ]
    doomed_credentials = [
        await add_credential(sessions, scene.tenant.id, scene.user.id) for _ in range(7)
    ]
    for client_id in doomed_credentials:
        await add_refresh_tokens(sessions, client_id, 2)
    kept_credential = await add_credential(sessions, scene.tenant.id, colleague.id)
    kept_refresh = await add_refresh_tokens(sessions, kept_credential, 2)
    for token in (doomed_token, colleague_token, tenant_token):
        assert (await validate(client, api_key(token["secret"]))).status_code == 200

    deleted = await client.delete(f"/identity/resources/users/v1/{scene.user.id}", headers=vendor)
    refused_at_once = await validate(client, api_key(doomed_token["secret"]))
    await finish_jobs(services)

    assert deleted.status_code == 200
    assert refused_at_once.status_code == 401
    assert await db.get(User, scene.user.id) is None
    owned = [
        sa.select(sa.func.count())
        .select_from(AccessToken)
        .where(AccessToken.user_id == scene.user.id),
        sa.select(sa.func.count())
        .select_from(ClientCredential)
        .where(ClientCredential.user_id == scene.user.id),
        sa.select(sa.func.count())
        .select_from(RefreshToken)
        .where(RefreshToken.client_id.in_(doomed_credentials)),
    ]
    assert [await db.scalar(statement) for statement in owned] == [0, 0, 0]
    assert await refresh_ids(db, kept_credential) == set(kept_refresh)
    assert (await validate(client, api_key(colleague_token["secret"]))).status_code == 200
    assert (await validate(client, api_key(tenant_token["secret"]))).status_code == 200
    redis = Redis.from_url(settings.redis_url)
    try:
        prefix = f"{settings.redis_prefix}v:"
        entries = await redis.mget(
            [f"{prefix}at:{token_id}" for token_id in [doomed_token["id"], *bulk_tokens]]
            + [f"{prefix}cc:{client_id}" for client_id in doomed_credentials]
        )
    finally:
        await redis.aclose()
    assert set(entries) == {b"-"}  # every entry of the user is a tombstone
    run = await db.scalar(sa.select(JobRun).where(JobRun.job == jobs.CASCADE_DELETIONS))
    assert run is not None
    assert run.outcome == "success"
    assert run.counts == {
        "users": 1,
        "tenants": 0,
        "access_tokens": 11,
        "credentials": 7,
        "refresh_tokens": 14,
    }


async def test_two_cascades_at_once_and_a_third_after_leave_the_same_end_state(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    survivor = await factory.user(tenant.id)
    for _ in range(25):
        await add_access_token(sessions, tenant.id, user.id)
        await add_credential(sessions, tenant.id, user.id)
    kept = await add_access_token(sessions, tenant.id, survivor.id)
    async with sessions() as session:
        await session.execute(sa.update(User).where(User.id == user.id).values(deleted_at=utcnow()))
        await session.commit()

    runs = await asyncio.gather(
        jobs.cascade_deletions(context(services, sessions, batch_size=4), user_id=user.id),
        jobs.cascade_deletions(context(services, sessions, batch_size=4), user_id=user.id),
    )
    again = await jobs.cascade_deletions(context(services, sessions), user_id=user.id)

    assert sum(run["users"] for run in runs) == 1
    assert again == {
        "users": 0,
        "tenants": 0,
        "access_tokens": 0,
        "credentials": 0,
        "refresh_tokens": 0,
    }
    assert await db.get(User, user.id) is None
    assert list(await db.scalars(sa.select(AccessToken.id))) == [kept]
    assert await db.scalar(sa.select(sa.func.count()).select_from(ClientCredential)) == 0


async def test_deleting_a_tenant_cascades_to_its_users_and_tokens_and_spares_other_tenants(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    user_token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    other_token = await create_access_token(client, vendor, scene.other_tenant.id)
    for _ in range(5):
        await add_access_token(sessions, scene.tenant.id)
        await add_credential(sessions, scene.tenant.id, scene.user.id)

    deleted = await client.delete(
        f"/tenants/resources/tenants/v1/{scene.tenant.id}", headers=vendor
    )
    refused_at_once = await validate(client, api_key(user_token["secret"]))
    active = await client.get(
        "/identity/resources/vendor-only/users/access-tokens/v1/active", headers=vendor
    )
    await finish_jobs(services)

    assert deleted.status_code == 200
    assert refused_at_once.status_code == 401
    assert user_token["id"] not in active.json()
    assert await db.get(Tenant, scene.tenant.id) is None
    assert (
        await db.scalar(
            sa.select(sa.func.count()).select_from(User).where(User.tenant_id == scene.tenant.id)
        )
        == 0
    )
    assert list(await db.scalars(sa.select(AccessToken.id))) == [other_token["id"]]
    assert (await validate(client, api_key(other_token["secret"]))).status_code == 200


async def test_a_user_being_deleted_cannot_be_created_again_until_the_cascade_is_done(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    services: Services,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    async with sessions() as session:
        await session.execute(sa.update(User).where(User.id == user.id).values(deleted_at=utcnow()))
        await session.commit()
    body = {"id": user.id, "email": "again@acme.test", "metadata": "{}"}
    headers = {**vendor, "frontegg-tenant-id": tenant.id}

    pending = await client.post("/identity/resources/users/v2", headers=headers, json=body)
    await jobs.cascade_deletions(context(services, sessions))
    done = await client.post("/identity/resources/users/v2", headers=headers, json=body)

    assert pending.status_code == 409
    assert pending.json() == {
        "errors": ["A user with this id is being deleted; try again in a minute"]
    }
    assert done.status_code == 201, done.text


# --- M2M switch and reconcile ----------------------------------------------------------------


async def test_re_enabling_restores_exactly_the_tokens_still_valid(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
    db: AsyncSession,
) -> None:
    scene = await build_scene(factory)
    lasting = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    deleted = await create_access_token(client, vendor, scene.tenant.id)
    expiring = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    jwt_headers = bearer(credential_jwt(services, settings, credential, tenant_id=scene.tenant.id))

    await configure(client, vendor, apiTokensEnabled=False)
    await finish_jobs(services)
    while_off = [
        (await validate(client, headers)).json()
        for headers in (api_key(lasting["secret"]), jwt_headers)
    ]
    removed = await client.delete(
        f"/identity/resources/tenants/access-tokens/v1/{deleted['id']}",
        headers={**vendor, "frontegg-tenant-id": scene.tenant.id},
    )
    with freeze_time(datetime.now(UTC) + timedelta(minutes=2), real_asyncio=True):
        await configure(client, vendor, apiTokensEnabled=True)
        await finish_jobs(services)
        after = {
            name: (await validate(client, headers)).status_code
            for name, headers in {
                "lasting": api_key(lasting["secret"]),
                "deleted": api_key(deleted["secret"]),
                "expiring": api_key(expiring["secret"]),
                "credential": jwt_headers,
            }.items()
        }

    assert while_off == [{"errors": ["Api tokens are disabled"]}] * 2
    assert removed.status_code == 200
    assert after == {"lasting": 200, "deleted": 401, "expiring": 401, "credential": 200}
    runs = list(await db.scalars(sa.select(JobRun).where(JobRun.job == jobs.PROPAGATE_M2M_SWITCH)))
    assert sorted(run.counts["enabled"] for run in runs) == [0, 1]
    assert {run.outcome for run in runs} == {"success"}


@serve_only  # reads Redis
async def test_propagation_rewrites_the_switch_in_redis_from_the_database(
    services: Services,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    redis = Redis.from_url(settings.redis_url)
    key = f"{settings.redis_prefix}v:env"
    try:
        await redis.set(key, b"0", ex=60)  # drift: the database says enabled
        counts = await jobs.propagate_m2m_switch(context(services, sessions))
        stored = await redis.get(key)
    finally:
        await redis.aclose()

    assert counts == {"enabled": 1}
    assert stored == b"1"


async def test_reconcile_buries_a_cached_token_whose_row_is_gone_and_drops_other_drift(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    scene = await build_scene(factory)
    vanished = await create_access_token(client, vendor, scene.tenant.id)
    changed = await create_access_token(client, vendor, scene.tenant.id)
    healthy = await create_access_token(client, vendor, scene.tenant.id)
    for token in (vanished, changed, healthy):
        assert (await validate(client, api_key(token["secret"]))).status_code == 200
    # Drift: rows changed behind the cache's back (a restore, a manual fix).
    async with sessions() as session:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id == vanished["id"]))
        await session.execute(
            sa.update(AccessToken)
            .where(AccessToken.id == changed["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()

    counts = await jobs.reconcile_cache(context(services, sessions))
    again = await jobs.reconcile_cache(context(services, sessions))

    assert counts["repaired"] == 2
    assert again["repaired"] == 0
    assert (await validate(client, api_key(vanished["secret"]))).status_code == 401
    assert (await validate(client, api_key(changed["secret"]))).status_code == 401
    assert (await validate(client, api_key(healthy["secret"]))).status_code == 200


# --- recording -----------------------------------------------------------------------------------


async def test_every_run_is_recorded_with_its_outcome_counts_and_error(
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await job_runs.run_job(context(services, sessions), jobs.EXPIRE_TOKENS)

    async def broken(_: JobContext) -> jobs.Counts:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(jobs.JOBS, jobs.RECONCILE_CACHE, broken)
    with pytest.raises(RuntimeError):
        await job_runs.run_job(context(services, sessions), jobs.RECONCILE_CACHE)

    runs = {run.job: run for run in await db.scalars(sa.select(JobRun))}
    assert runs[jobs.EXPIRE_TOKENS].outcome == "success"
    assert runs[jobs.EXPIRE_TOKENS].counts["access_tokens"] == 0
    assert runs[jobs.EXPIRE_TOKENS].finished_at is not None
    assert runs[jobs.RECONCILE_CACHE].outcome == "failure"
    assert runs[jobs.RECONCILE_CACHE].error == "RuntimeError: disk on fire"
    stats = {(s.job, s.outcome): s.runs for s in await db.scalars(sa.select(JobStat))}
    assert stats == {(jobs.EXPIRE_TOKENS, "success"): 1, (jobs.RECONCILE_CACHE, "failure"): 1}
