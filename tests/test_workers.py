"""The jobs on real Celery workers (`m2m worker` subprocesses) over this run's Redis broker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import events, jobs
from domain.clock import utcnow
from domain.models import AccessToken, AuditEvent, ClientCredential, EventDelivery, JobRun, User
from domain.settings import Settings
from tests.factories import Factory, add_access_token, add_credential, add_refresh_tokens
from tests.processes import PrivatePostgres, running_server, serve_environment
from tests.receiver import running_receiver
from workers import runtime, tasks
from workers.queue import CeleryJobQueue

WAIT_SECONDS = 90


@contextlib.contextmanager
def worker_process(
    settings: Settings, log: Path, **extra_env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`m2m worker` with one process, in a session of its own (so it can be killed whole)."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "worker", "--concurrency=1"],
            env={**serve_environment(settings), **extra_env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        # The main process only: it lets the pool finish (and acknowledge) the task in hand.
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the worker and its pool processes at once: no chance to hand anything back."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, log: Path) -> None:
    """Wait for a worker (another process) to make `check` true."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:]  # noqa: ASYNC240  (only when failing)
            raise AssertionError(f"{what} did not happen; worker log:\n{tail}")
        await asyncio.sleep(0.05)  # polling another process, not standing in for time


@pytest.fixture
def broker_settings(settings: Settings) -> Settings:
    """This run's stores, under a Redis prefix of this test's own: no task a test leaves in the
    broker (a redelivery, a duplicate) reaches the next test's worker. Under the run's prefix,
    so the run's cleanup deletes its keys."""
    return dataclasses.replace(
        settings, redis_prefix=f"{settings.redis_prefix}{uuid.uuid4().hex[:8]}:"
    )


@pytest.fixture
async def queue(broker_settings: Settings) -> AsyncIterator[CeleryJobQueue]:
    """The API's queue: what `m2m serve` sends tasks with."""
    sender = CeleryJobQueue(broker_settings)
    yield sender
    await sender.close()


async def runs_of(db: AsyncSession, job: str) -> list[JobRun]:
    return list(
        await db.scalars(sa.select(JobRun).where(JobRun.job == job).order_by(JobRun.started_at))
    )


async def count(db: AsyncSession, statement: sa.Select[tuple[int]]) -> int:
    return int(await db.scalar(statement) or 0)


@pytest.mark.processes
async def test_a_worker_runs_an_enqueued_expiry_and_records_the_run(
    broker_settings: Settings,
    queue: CeleryJobQueue,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    tenant = await factory.tenant()
    expired = await add_access_token(
        sessions, tenant.id, expires_at=utcnow() - timedelta(minutes=1)
    )
    lasting = await add_access_token(sessions, tenant.id, expires_at=utcnow() + timedelta(days=1))
    log = tmp_path / "worker.log"

    with worker_process(broker_settings, log):
        await queue.enqueue(jobs.EXPIRE_TOKENS)

        async def recorded() -> bool:
            return any(run.outcome == "success" for run in await runs_of(db, jobs.EXPIRE_TOKENS))

        await eventually(recorded, "the expiry run", log)

    marked = await db.get(AccessToken, expired)
    unmarked = await db.get(AccessToken, lasting)
    assert marked is not None
    assert marked.expired_at is not None
    assert unmarked is not None
    assert unmarked.expired_at is None
    (run,) = await runs_of(db, jobs.EXPIRE_TOKENS)
    assert run.counts["access_tokens"] == 1
    assert '"job": "expire_tokens"' in log.read_text()  # structured logs name the job


@pytest.mark.processes
async def test_a_cascade_delivered_twice_changes_nothing_the_second_time(
    broker_settings: Settings,
    queue: CeleryJobQueue,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    survivor = await factory.user(tenant.id)
    for _ in range(5):
        await add_access_token(sessions, tenant.id, user.id)
        client_id = await add_credential(sessions, tenant.id, user.id)
        await add_refresh_tokens(sessions, client_id, 2)
    kept = await add_access_token(sessions, tenant.id, survivor.id)
    async with sessions() as session:
        await session.execute(sa.update(User).where(User.id == user.id).values(deleted_at=utcnow()))
        await session.commit()
    log = tmp_path / "worker.log"

    with worker_process(broker_settings, log):
        await queue.enqueue(jobs.CASCADE_DELETIONS, user_id=user.id)
        await queue.enqueue(jobs.CASCADE_DELETIONS, user_id=user.id)

        async def both_ran() -> bool:
            runs = await runs_of(db, jobs.CASCADE_DELETIONS)
            return sum(run.outcome == "success" for run in runs) == 2

        await eventually(both_ran, "two cascade runs", log)

    first, second = await runs_of(db, jobs.CASCADE_DELETIONS)
    assert first.counts == {
        "users": 1,
        "tenants": 0,
        "access_tokens": 5,
        "credentials": 5,
        "refresh_tokens": 10,
    }
    assert set(second.counts.values()) == {0}
    assert await db.get(User, user.id) is None
    assert list(await db.scalars(sa.select(AccessToken.id))) == [kept]


@pytest.mark.processes
async def test_a_worker_killed_mid_cascade_leaves_the_task_to_be_redelivered_and_finished(
    broker_settings: Settings,
    queue: CeleryJobQueue,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    total = 4000
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    survivor = await factory.user(tenant.id)
    now = utcnow()
    async with sessions() as session:
        await session.execute(
            sa.insert(AccessToken),
            [
                {
                    "id": str(uuid.uuid4()),
                    "tenant_id": tenant.id,
                    "user_id": user.id,
                    "created_at": now,
                }
                for _ in range(total)
            ],
        )
        await session.execute(sa.update(User).where(User.id == user.id).values(deleted_at=now))
        await session.commit()
    kept = await add_credential(sessions, tenant.id, survivor.id)
    owned = (
        sa.select(sa.func.count()).select_from(AccessToken).where(AccessToken.user_id == user.id)
    )
    log = tmp_path / "worker.log"
    # Small batches: the cascade commits often, so it can be caught halfway.
    slow = {"M2M_JOB_BATCH_SIZE": "10", "M2M_BROKER_VISIBILITY_TIMEOUT": "1"}

    with worker_process(broker_settings, log, **slow) as first_worker:
        await queue.enqueue(jobs.CASCADE_DELETIONS, user_id=user.id)

        async def started() -> bool:
            return await count(db, owned) < total

        await eventually(started, "the cascade starting", log)
        kill_worker(first_worker)
    left_by_the_killed_worker = await count(db, owned)

    with worker_process(broker_settings, log, **slow):

        async def finished() -> bool:
            runs = await runs_of(db, jobs.CASCADE_DELETIONS)
            done = any(run.outcome == "success" for run in runs)
            return done and await db.get(User, user.id) is None

        await eventually(finished, "the redelivered cascade finishing", log)

    assert 0 < left_by_the_killed_worker < total
    assert await count(db, owned) == 0
    assert await db.get(User, user.id) is None
    outcomes = [run.outcome for run in await runs_of(db, jobs.CASCADE_DELETIONS)]
    # The killed run never finished; the redelivered one succeeded. With a visibility timeout of
    # 1 s a slow machine may deliver the task once more: at least once, and idempotent.
    assert outcomes[0] == "running"
    assert len(outcomes) >= 2
    assert set(outcomes[1:]) == {"success"}
    assert await db.get(ClientCredential, kept) is not None


@pytest.mark.processes
async def test_a_user_deleted_through_m2m_serve_is_cascaded_by_the_worker(
    broker_settings: Settings,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    token_ids = [await add_access_token(sessions, tenant.id, user.id) for _ in range(3)]
    log = tmp_path / "worker.log"

    with running_server(broker_settings) as base, worker_process(broker_settings, log):
        async with httpx.AsyncClient(base_url=base) as http:
            login = await http.post(
                "/auth/vendor",
                json={
                    "clientId": broker_settings.vendor_client_id,
                    "secret": broker_settings.vendor_secret,
                },
            )
            vendor = {"x-access-token": login.json()["token"]}
            deleted = await http.delete(f"/identity/resources/users/v1/{user.id}", headers=vendor)

        async def cascaded() -> bool:
            return await db.get(User, user.id) is None

        await eventually(cascaded, "the cascade of the deleted user", log)

    assert deleted.status_code == 200
    remaining = await db.scalar(
        sa.select(sa.func.count()).select_from(AccessToken).where(AccessToken.id.in_(token_ids))
    )
    assert remaining == 0


async def test_a_broker_that_never_answers_does_not_hold_the_request(settings: Settings) -> None:
    """A listener that accepts and never answers: the enqueue gives up, logs, and the next one
    within the breaker's interval is skipped at once. Nothing is raised to the route."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    sender = CeleryJobQueue(dataclasses.replace(settings, broker_url=f"redis://127.0.0.1:{port}/0"))
    try:
        async with asyncio.timeout(15):  # a hang guard, not a speed measurement
            await sender.enqueue(jobs.EXPIRE_TOKENS)
            await sender.enqueue(jobs.EXPIRE_TOKENS)
    finally:
        silent.close()
        await sender.close()


@pytest.mark.processes
def test_a_celery_job_whose_database_is_away_is_retried_then_done_once_it_returns(
    private_postgres: PrivatePostgres,
    broker_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's side of a PostgreSQL outage: the task reports a transient fault, which
    Celery retries with backoff (never a failed run), and the same task succeeds once
    PostgreSQL is back."""
    environment = {
        "M2M_DATABASE_URL": private_postgres.url,
        "M2M_REDIS_URL": broker_settings.redis_url,
        "M2M_REDIS_PREFIX": broker_settings.redis_prefix,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    runtime.worker_settings.cache_clear()
    try:
        private_postgres.stop()
        with pytest.raises(tasks.TransientFault):
            tasks.cascade_deletions.run()  # the task's body, as the worker calls it
        assert tasks.cascade_deletions.autoretry_for == (tasks.TransientFault,)

        private_postgres.start()
        counts = tasks.cascade_deletions.run()
        assert counts == {
            "users": 0,
            "tenants": 0,
            "access_tokens": 0,
            "credentials": 0,
            "refresh_tokens": 0,
        }
    finally:
        runtime.worker_settings.cache_clear()


@pytest.mark.processes
async def test_a_worker_deletes_tokens_unused_past_the_policy_and_prunes_old_audit_events(
    broker_settings: Settings,
    queue: CeleryJobQueue,
    factory: Factory,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    tenant = await factory.tenant()
    now = utcnow()
    idle = await add_access_token(sessions, tenant.id)
    warned_idle = await add_credential(sessions, tenant.id)
    fresh = await add_access_token(sessions, tenant.id)
    async with sessions() as session:
        # Created 40 days ago: `idle` was never warned, `warned_idle` was 8 days ago.
        long_ago = now - timedelta(days=40)
        await session.execute(
            sa.update(AccessToken).where(AccessToken.id == idle).values(created_at=long_ago)
        )
        await session.execute(
            sa.update(ClientCredential)
            .where(ClientCredential.client_id == warned_idle)
            .values(created_at=long_ago, unused_warning_at=now - timedelta(days=8))
        )
        session.add_all(
            AuditEvent(
                at=now - timedelta(days=age),
                actor_type="vendor",
                action="tenant.created",
                target_type="tenant",
                target_id=tenant.id,
                tenant_id=tenant.id,
                details={},
            )
            for age in (3, 3, 3, 0)
        )
        await session.commit()
    log = tmp_path / "worker.log"
    policy = {
        "M2M_DELETE_UNUSED_TOKENS_AFTER_DAYS": "30",
        "M2M_UNUSED_TOKEN_WARNING_DAYS": "7",
        "M2M_AUDIT_RETENTION_DAYS": "2",
    }

    with worker_process(broker_settings, log, **policy):
        await queue.enqueue(jobs.DELETE_UNUSED_TOKENS)
        await queue.enqueue(jobs.PRUNE_AUDIT_EVENTS)

        async def both_ran() -> bool:
            done = [
                run.outcome == "success"
                for job in (jobs.DELETE_UNUSED_TOKENS, jobs.PRUNE_AUDIT_EVENTS)
                for run in await runs_of(db, job)
            ]
            return done == [True, True]

        await eventually(both_ran, "the unused-token and audit-pruning runs", log)

    (policy_run,) = await runs_of(db, jobs.DELETE_UNUSED_TOKENS)
    assert policy_run.counts == {"warned": 1, "deleted": 1}
    assert await db.get(ClientCredential, warned_idle) is None
    warned = await db.get(AccessToken, idle)
    assert warned is not None
    assert warned.unused_warning_at is not None
    untouched = await db.get(AccessToken, fresh)
    assert untouched is not None
    assert untouched.unused_warning_at is None
    (prune_run,) = await runs_of(db, jobs.PRUNE_AUDIT_EVENTS)
    assert prune_run.counts["audit_events"] >= 3
    ages = list(await db.scalars(sa.select(AuditEvent.at)))
    assert ages
    assert all(at > now - timedelta(days=2) for at in ages)


@pytest.mark.processes
async def test_a_worker_killed_mid_delivery_loses_no_event_and_the_job_is_watched(
    broker_settings: Settings,
    queue: CeleryJobQueue,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    tmp_path: Path,
) -> None:
    with running_receiver() as receiver:
        response = await client.post(
            "/events/endpoints",
            headers=vendor,
            json={"url": receiver.url("/hook"), "eventTypes": ["token.created"]},
        )
        assert response.status_code == 201, response.text
        inbox = receiver.inbox("/hook")
        inbox.secret = response.json()["secret"]
        inbox.hold = threading.Event()
        async with sessions() as session:
            announced = [
                events.announce(session, events.TOKEN_CREATED, {"id": f"t{n}"}, utcnow())
                for n in range(3)
            ]
            await session.commit()
        log = tmp_path / "worker.log"

        with worker_process(broker_settings, log) as first_worker:
            await queue.enqueue(jobs.DELIVER_EVENTS)

            async def all_being_sent() -> bool:
                return inbox.requests >= len(announced)

            await eventually(all_being_sent, "the worker sending the three events", log)
            kill_worker(first_worker)
        # What the dead worker sent never got an answer it could record.
        inbox.failures = len(announced)
        inbox.hold.set()
        inbox.hold = None

        with worker_process(broker_settings, log):

            async def all_delivered() -> bool:
                # The deliveries are due again once the dead worker's lease has passed.
                await queue.enqueue(jobs.DELIVER_EVENTS)
                await asyncio.sleep(1)  # polling another process, not standing in for time
                return set(inbox.ids) == set(announced)

            await eventually(all_delivered, "every event delivered after the kill", log)

        statuses = list(await db.scalars(sa.select(EventDelivery.status)))
        assert statuses == ["delivered"] * len(announced)
        assert inbox.bad_signatures == 0
    watched = await client.get("/ops/jobs", headers=vendor)
    names = {job["job"] for job in watched.json()["jobs"]}
    assert {jobs.DELIVER_EVENTS, jobs.WARN_EXPIRING_TOKENS} <= names
    metrics = await client.get("/metrics", headers=vendor)
    assert 'm2m_job_runs_total{job="deliver_events",outcome="success"}' in metrics.text
