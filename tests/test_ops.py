"""What operators watch: /ops/jobs, /metrics and the health probes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import httpx
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import job_runs, jobs
from domain.clock import utcnow
from domain.jobs import JobContext
from tests.factories import Factory, build_scene
from tests.steps import (
    api_key,
    create_access_token,
    exchange_ok,
    refresh,
    replaced,
    simple_credential,
    validate,
)


def sample(text: str, line_start: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def context(services: Services, sessions: async_sessionmaker[AsyncSession]) -> JobContext:
    return JobContext(sessions=sessions, validity=services.validity, clock=utcnow)


async def run_every_scheduled_job(
    services: Services, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for schedule in jobs.SCHEDULES:
        await job_runs.run_job(context(services, sessions), schedule.job)


async def test_ops_jobs_lists_each_scheduled_job_with_its_last_run_and_next_due_time(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await run_every_scheduled_job(services, sessions)

    response = await client.get("/ops/jobs", headers=vendor)

    assert response.status_code == 200
    listed = {job["job"]: job for job in response.json()["jobs"]}
    assert set(listed) == {schedule.job for schedule in jobs.SCHEDULES}
    expiry = listed[jobs.EXPIRE_TOKENS]
    assert expiry["everySeconds"] == 60
    assert expiry["overdue"] is False
    assert expiry["lastRun"]["outcome"] == "success"
    assert expiry["lastRun"]["counts"]["access_tokens"] == 0
    assert expiry["lastSuccessAt"] == expiry["lastRun"]["finishedAt"]
    started = datetime.fromisoformat(expiry["lastRun"]["startedAt"].replace("Z", "+00:00"))
    due = datetime.fromisoformat(expiry["nextDueAt"].replace("Z", "+00:00"))
    assert due - started == timedelta(seconds=60)


async def test_the_unused_token_and_audit_pruning_jobs_appear_in_ops_jobs_and_metrics(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await run_every_scheduled_job(services, sessions)

    listed = {
        job["job"]: job for job in (await client.get("/ops/jobs", headers=vendor)).json()["jobs"]
    }
    metrics = (await client.get("/metrics", headers=vendor)).text

    for job, counted in (
        (jobs.DELETE_UNUSED_TOKENS, "deleted"),
        (jobs.PRUNE_AUDIT_EVENTS, "audit_events"),
    ):
        assert listed[job]["everySeconds"] == 3600
        assert listed[job]["lastRun"]["outcome"] == "success"
        assert counted in listed[job]["lastRun"]["counts"]
        assert f'm2m_job_runs_total{{job="{job}",outcome="success"}}' in metrics
        assert f'm2m_job_overdue{{job="{job}"}} 0.0' in metrics


async def test_a_job_that_missed_two_intervals_is_overdue_and_the_probe_reports_it(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await run_every_scheduled_job(services, sessions)
    ready_now = await client.get("/health/ready")

    with freeze_time(datetime.now(UTC) + timedelta(seconds=125), real_asyncio=True):
        listed = (await client.get("/ops/jobs", headers=vendor)).json()["jobs"]
        ready_later = await client.get("/health/ready")
        metrics = (await client.get("/metrics", headers=vendor)).text

    overdue = {job["job"]: job["overdue"] for job in listed}
    assert overdue[jobs.EXPIRE_TOKENS] is True
    assert overdue[jobs.RECONCILE_CACHE] is False  # every 5 minutes: not late yet
    assert ready_now.status_code == 200
    assert ready_now.json() == {
        "status": "ready",
        "checks": {"database": "ok", "expiryJob": "ok", "redis": "ok"},
    }
    # Reported, without taking the process out of its load balancer.
    assert ready_later.status_code == 200
    assert ready_later.json() == {
        "status": "degraded",
        "checks": {"database": "ok", "expiryJob": "overdue", "redis": "ok"},
    }
    assert f'm2m_job_overdue{{job="{jobs.EXPIRE_TOKENS}"}} 1.0' in metrics


async def test_metrics_need_the_vendor_token_by_default(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    token = vendor["x-access-token"]

    anonymous = await client.get("/metrics")
    forged = await client.get("/metrics", headers={"x-access-token": "not-a-vendor-token"})
    as_header = await client.get("/metrics", headers=vendor)
    as_bearer = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})

    assert anonymous.status_code == 401
    assert anonymous.json() == {"errors": ["Missing vendor token"]}
    assert "m2m_requests_total" not in anonymous.text
    assert forged.status_code == 401
    assert (as_header.status_code, as_bearer.status_code) == (200, 200)
    assert "m2m_job_overdue" in as_header.text
    assert "m2m_job_overdue" in as_bearer.text


async def test_metrics_are_open_to_anyone_when_m2m_metrics_public_is_true(
    client: httpx.AsyncClient, services: Services
) -> None:
    public = dataclasses.replace(services.settings, metrics_public=True)
    with replaced(services, "settings", public):
        anonymous = await client.get("/metrics")

    assert anonymous.status_code == 200
    assert "m2m_job_overdue" in anonymous.text


async def test_ops_jobs_is_for_the_vendor_only(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/ops/jobs")

    assert anonymous.status_code == 401
    assert anonymous.json()["errors"]


async def test_metrics_count_validations_and_job_runs(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)
    before = (await client.get("/metrics", headers=vendor)).text

    assert (await validate(client, api_key(token["secret"]))).status_code == 200
    assert (await validate(client, api_key("not-a-token"))).status_code == 401
    await job_runs.run_job(context(services, sessions), jobs.EXPIRE_TOKENS)
    response = await client.get("/metrics", headers=vendor)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    valid = 'm2m_requests_total{operation="validation",outcome="success"}'
    rejected = 'm2m_requests_total{operation="validation",outcome="rejected"}'
    assert sample(after, valid) == sample(before, valid) + 1
    assert sample(after, rejected) == sample(before, rejected) + 1
    runs = f'm2m_job_runs_total{{job="{jobs.EXPIRE_TOKENS}",outcome="success"}}'
    assert sample(after, runs) == 1
    last = f'm2m_job_last_success_timestamp_seconds{{job="{jobs.EXPIRE_TOKENS}"}}'
    assert abs(sample(after, last) - datetime.now(UTC).timestamp()) < 60


async def test_metrics_count_exchanges_and_refreshes_by_outcome(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    before = (await client.get("/metrics", headers=vendor)).text

    pair = await exchange_ok(client, credential)
    wrong = await client.post(
        "/identity/resources/auth/v2/api-token",
        json={"clientId": credential.client_id, "secret": "wrong-secret"},
    )
    refreshed = await refresh(client, pair["refresh_token"])
    oauth_refresh = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
    )
    after = (await client.get("/metrics", headers=vendor)).text

    assert (wrong.status_code, refreshed.status_code, oauth_refresh.status_code) == (401, 200, 200)

    def grew(operation: str, outcome: str) -> float:
        line = f'm2m_requests_total{{operation="{operation}",outcome="{outcome}"}}'
        return sample(after, line) - sample(before, line)

    assert grew("exchange", "success") == 1
    assert grew("exchange", "rejected") == 1
    assert grew("refresh", "success") == 2  # the Frontegg route and the OAuth grant


async def test_liveness_answers_while_the_process_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_a_run_for_one_credential_does_not_count_as_the_periodic_run(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await job_runs.run_job(
        context(services, sessions), jobs.PRUNE_REFRESH_TOKENS, {"client_id": "one-credential"}
    )

    listed = (await client.get("/ops/jobs", headers=vendor)).json()["jobs"]

    prune = next(job for job in listed if job["job"] == jobs.PRUNE_REFRESH_TOKENS)
    assert prune["lastRun"] is None
    assert prune["lastSuccessAt"] is None
