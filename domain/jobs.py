"""The background jobs as plain async functions: expire, prune, cascade, propagate, reconcile.

Celery tasks (`workers/tasks.py`) and the in-process runner of `m2m dev` both call these; each
job is idempotent (row locks and SKIP LOCKED, never hope) and returns the counts it records.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from domain import audit
from domain.configuration import REFRESH_TOKENS_ROTATION_LIMIT
from domain.db import database_unreachable, upsert_insert
from domain.errors import Unavailable
from domain.exchange import usable_refresh_token
from domain.models import (
    ENVIRONMENT_ROW_ID,
    AccessToken,
    ClientCredential,
    Environment,
    JobRun,
    JobStat,
    RefreshToken,
    Tenant,
    User,
    WebhookDelivery,
)
from domain.validity import ValidityCache

logger = logging.getLogger("m2m.jobs")

Counts = dict[str, int]

EXPIRE_TOKENS: Final = "expire_tokens"
PRUNE_REFRESH_TOKENS: Final = "prune_refresh_tokens"
CASCADE_DELETIONS: Final = "cascade_deletions"
PROPAGATE_M2M_SWITCH: Final = "propagate_m2m_switch"
RECONCILE_CACHE: Final = "reconcile_cache"

# A webhook-id need be remembered only while its signature's timestamp is still accepted.
WEBHOOK_ID_RETENTION: Final = timedelta(minutes=15)
JOB_RUN_RETENTION: Final = timedelta(days=30)


class JobQueue(Protocol):
    """Where the API sends a job to run soon (Celery in production, in-process in `m2m dev`).

    Call it only after the commit that the job must see.
    """

    async def enqueue(self, job: str, **arguments: Any) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class JobContext:
    """What a job needs: the database, the validity cache, the clock and its batch size."""

    sessions: async_sessionmaker[AsyncSession]
    validity: ValidityCache
    clock: Callable[[], datetime]
    batch_size: int = 2000


class Debounce:
    """Says yes to a key at most once per interval (per process): an exchange enqueues the prune
    of its credential, but a busy credential need not be pruned on every exchange."""

    def __init__(self, interval_seconds: float, max_keys: int = 100_000) -> None:
        self._interval = interval_seconds
        self._max_keys = max_keys
        self._last: dict[str, float] = {}

    def due(self, key: str, clock: float) -> bool:
        last = self._last.get(key)
        if last is not None and clock - last < self._interval:
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = clock
        return True


@dataclass(frozen=True)
class Schedule:
    """A periodic job and how often it is due."""

    job: str
    every: timedelta


# --- expire tokens ----------------------------------------------------------------------------


async def expire_tokens(context: JobContext) -> Counts:
    """Mark access tokens and credentials whose time has passed, drop them from the validity
    cache, and delete the refresh tokens of the expired credentials.

    Validation never waits for this: it compares `expires_at` with the clock on every request.
    Rows are claimed with SKIP LOCKED and marked in the same transaction, so two copies running
    at once split the work and a second run finds nothing left.
    """
    now = context.clock()
    counts: Counts = {"access_tokens": 0, "credentials": 0, "refresh_tokens": 0}

    async def mark_tokens(session: AsyncSession, ids: list[str]) -> None:
        await session.execute(
            sa.update(AccessToken).where(AccessToken.id.in_(ids)).values(expired_at=now)
        )
        _audit_expired(session, "access_token", ids, now)

    async def mark_credentials(session: AsyncSession, ids: list[str]) -> None:
        await session.execute(
            sa.update(ClientCredential)
            .where(ClientCredential.client_id.in_(ids))
            .values(expired_at=now)
        )
        refresh = await session.execute(
            sa.delete(RefreshToken).where(RefreshToken.client_id.in_(ids))
        )
        counts["refresh_tokens"] += _rowcount(refresh)
        _audit_expired(session, "client_credential", ids, now)

    async def evict_tokens(ids: list[str]) -> None:
        await context.validity.evict_tokens(access_token_ids=ids)

    async def evict_credentials(ids: list[str]) -> None:
        await context.validity.evict_tokens(client_ids=ids)

    counts["access_tokens"] = await _in_batches(
        context,
        sa.select(AccessToken.id)
        .where(AccessToken.expires_at <= now, AccessToken.expired_at.is_(None))
        .order_by(AccessToken.expires_at),
        mark_tokens,
        evict_tokens,
    )
    counts["credentials"] = await _in_batches(
        context,
        sa.select(ClientCredential.client_id)
        .where(ClientCredential.expires_at <= now, ClientCredential.expired_at.is_(None))
        .order_by(ClientCredential.expires_at),
        mark_credentials,
        evict_credentials,
    )
    async with context.sessions() as session, session.begin():
        # A webhook id older than the signature tolerance can no longer be replayed.
        webhooks = await session.execute(
            sa.delete(WebhookDelivery).where(
                WebhookDelivery.received_at < now - WEBHOOK_ID_RETENTION
            )
        )
        runs = await session.execute(
            sa.delete(JobRun).where(JobRun.started_at < now - JOB_RUN_RETENTION)
        )
    counts["webhook_ids"] = _rowcount(webhooks)
    counts["job_runs"] = _rowcount(runs)
    return counts


def _audit_expired(session: AsyncSession, kind: str, ids: Sequence[str], now: datetime) -> None:
    for target_id in ids:
        audit.record(
            session, None, f"{kind}.expired", target_type=kind, target_id=target_id, now=now
        )


def _rowcount(result: Any) -> int:
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


async def _in_batches(
    context: JobContext,
    claim: sa.Select[Any],
    act: Callable[[AsyncSession, list[str]], Awaitable[None]],
    after_commit: Callable[[list[str]], Awaitable[None]] | None = None,
) -> int:
    """Claim up to batch_size ids with `claim` (rows locked, SKIP LOCKED: another copy of the
    job takes other rows), `act` on them in the same transaction, commit, then `after_commit`;
    until a batch comes back short. Returns how many ids were claimed in all."""
    total = 0
    while True:
        async with context.sessions() as session, session.begin():
            ids = list(
                await session.scalars(
                    claim.limit(context.batch_size).with_for_update(skip_locked=True)
                )
            )
            if ids:
                await act(session, ids)
        if ids and after_commit is not None:
            await after_commit(ids)
        total += len(ids)
        if len(ids) < context.batch_size:
            return total


# --- prune refresh tokens ---------------------------------------------------------------------


async def prune_refresh_tokens(context: JobContext, client_id: str | None = None) -> Counts:
    """Delete refresh tokens that can never be used again: revoked, expired, beyond the newest
    REFRESH_TOKENS_ROTATION_LIMIT usable ones of their credential, and used ones whose family
    has no usable token left. A used token of a live family is kept: presenting it again is
    how reuse is detected (RFC 9700 §4.14.2), so it stays until its family is dead.

    `client_id` limits the work to one credential (enqueued after its exchanges). Rows are
    claimed with SKIP LOCKED: never waits on an exchange or refresh holding them.
    """
    now = context.clock()
    live_sibling = aliased(RefreshToken, name="live_sibling")
    family_alive = (
        sa.select(live_sibling.id)
        .where(
            live_sibling.family_id == RefreshToken.family_id,
            *usable_refresh_token(live_sibling, now),
        )
        .exists()
    )
    dead = sa.or_(
        RefreshToken.revoked_at.is_not(None),
        RefreshToken.expires_at <= now,
        sa.and_(RefreshToken.used_at.is_not(None), ~family_alive),
    )
    ranked = sa.select(
        RefreshToken.id,
        sa.func.row_number()
        .over(
            partition_by=RefreshToken.client_id,
            order_by=(RefreshToken.created_at.desc(), RefreshToken.id.desc()),
        )
        .label("newest"),
    ).where(*usable_refresh_token(RefreshToken, now))
    scope: list[sa.ColumnElement[bool]] = []
    if client_id is not None:
        scope.append(RefreshToken.client_id == client_id)
        ranked = ranked.where(RefreshToken.client_id == client_id)
    ranked_rows = ranked.subquery("ranked")
    beyond_cap = sa.select(ranked_rows.c.id).where(
        ranked_rows.c.newest > REFRESH_TOKENS_ROTATION_LIMIT
    )

    async def delete(session: AsyncSession, ids: list[str]) -> None:
        await session.execute(sa.delete(RefreshToken).where(RefreshToken.id.in_(ids)))

    claim = sa.select(RefreshToken.id).where(*scope, sa.or_(dead, RefreshToken.id.in_(beyond_cap)))
    return {"refresh_tokens": await _in_batches(context, claim, delete)}


# --- user and tenant deletion cascade ---------------------------------------------------------


async def cascade_deletions(
    context: JobContext, user_id: str | None = None, tenant_id: str | None = None
) -> Counts:
    """Finish deletions: delete every credential, refresh token and access token of deleted
    users and tenants (those named, or every one pending), in batches that each commit, then the
    user or tenant row itself.

    The deletion already made their tokens invalid (the row is marked and the validity cache
    holds its tombstone); this is the cleanup. A batch that commits stays done, so a worker
    killed halfway resumes where it stopped when the task is delivered again; a user or tenant
    already gone is a no-op.
    """
    async with context.sessions() as session:
        users = sa.select(User.id).where(User.deleted_at.is_not(None))
        tenants = sa.select(Tenant.id).where(Tenant.deleted_at.is_not(None))
        if user_id is not None or tenant_id is not None:
            users = users.where(User.id == user_id)
            tenants = tenants.where(Tenant.id == tenant_id)
        user_ids = list(await session.scalars(users))
        tenant_ids = list(await session.scalars(tenants))
    counts: Counts = {
        "users": 0,
        "tenants": 0,
        "access_tokens": 0,
        "credentials": 0,
        "refresh_tokens": 0,
    }
    for deleted_user in user_ids:
        await _delete_tokens_of(
            context, AccessToken.user_id, ClientCredential.user_id, deleted_user, counts
        )
        async with context.sessions() as session, session.begin():
            gone = await session.execute(
                sa.delete(User).where(User.id == deleted_user, User.deleted_at.is_not(None))
            )
        counts["users"] += _rowcount(gone)
    for deleted_tenant in tenant_ids:
        await _delete_tokens_of(
            context, AccessToken.tenant_id, ClientCredential.tenant_id, deleted_tenant, counts
        )
        counts["users"] += await _in_batches(
            context, sa.select(User.id).where(User.tenant_id == deleted_tenant), _delete_users
        )
        async with context.sessions() as session, session.begin():
            gone = await session.execute(
                sa.delete(Tenant).where(Tenant.id == deleted_tenant, Tenant.deleted_at.is_not(None))
            )
        counts["tenants"] += _rowcount(gone)
    return counts


async def _delete_tokens_of(
    context: JobContext,
    token_owner: Any,
    credential_owner: Any,
    owner_id: str,
    counts: Counts,
) -> None:
    """Delete, batch by batch, the credentials (with their refresh tokens) and the access
    tokens whose owner column equals `owner_id`, tombstoning each batch in the cache."""

    async def delete_credentials(session: AsyncSession, ids: list[str]) -> None:
        refresh = await session.execute(
            sa.delete(RefreshToken).where(RefreshToken.client_id.in_(ids))
        )
        counts["refresh_tokens"] += _rowcount(refresh)
        await session.execute(
            sa.delete(ClientCredential).where(ClientCredential.client_id.in_(ids))
        )

    async def delete_tokens(session: AsyncSession, ids: list[str]) -> None:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id.in_(ids)))

    async def bury_credentials(ids: list[str]) -> None:
        await context.validity.invalidate_tokens(client_ids=ids)

    async def bury_tokens(ids: list[str]) -> None:
        await context.validity.invalidate_tokens(access_token_ids=ids)

    counts["credentials"] += await _in_batches(
        context,
        sa.select(ClientCredential.client_id).where(credential_owner == owner_id),
        delete_credentials,
        bury_credentials,
    )
    counts["access_tokens"] += await _in_batches(
        context,
        sa.select(AccessToken.id).where(token_owner == owner_id),
        delete_tokens,
        bury_tokens,
    )


async def _delete_users(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(sa.delete(User).where(User.id.in_(ids)))


# --- M2M switch and cache reconcile -------------------------------------------------------------


async def propagate_m2m_switch(context: JobContext) -> Counts:
    """Bring the validity cache in line with the committed apiTokensEnabled: the flag in Redis
    and every process's in-process answers. Token entries need no change: disabling never
    touched them, so enabling again restores exactly the tokens still valid."""
    async with context.sessions() as session:
        enabled = await session.scalar(
            sa.select(Environment.api_tokens_enabled).where(Environment.id == ENVIRONMENT_ROW_ID)
        )
    await context.validity.switch_api_tokens(bool(enabled))
    return {"enabled": int(bool(enabled))}


async def reconcile_cache(context: JobContext) -> Counts:
    """Repair every validity-cache entry that disagrees with PostgreSQL."""
    return await context.validity.reconcile(context.clock())


# --- running and recording ----------------------------------------------------------------------

Job = Callable[..., Awaitable[Counts]]

JOBS: Final[dict[str, Job]] = {
    EXPIRE_TOKENS: expire_tokens,
    PRUNE_REFRESH_TOKENS: prune_refresh_tokens,
    CASCADE_DELETIONS: cascade_deletions,
    PROPAGATE_M2M_SWITCH: propagate_m2m_switch,
    RECONCILE_CACHE: reconcile_cache,
}

# The periodic jobs. The cascade is also swept periodically, so that a deletion whose task
# was lost (broker down when it was enqueued) still finishes.
SCHEDULES: Final = (
    Schedule(EXPIRE_TOKENS, timedelta(minutes=1)),
    Schedule(PRUNE_REFRESH_TOKENS, timedelta(minutes=10)),
    Schedule(RECONCILE_CACHE, timedelta(minutes=5)),
    Schedule(CASCADE_DELETIONS, timedelta(minutes=5)),
)

current_job: ContextVar[str | None] = ContextVar("current_job", default=None)
current_run: ContextVar[str | None] = ContextVar("current_run", default=None)


async def run_job(
    context: JobContext, job: str, arguments: Mapping[str, Any] | None = None
) -> Counts:
    """Run one job and record the run: started, then finished with its outcome and counts, or
    failed with its error (which is raised again, so that Celery can retry)."""
    function = JOBS[job]
    run_id = str(uuid.uuid4())
    job_token = current_job.set(job)
    run_token = current_run.set(run_id)
    try:
        started = context.clock()
        async with context.sessions() as session, session.begin():
            session.add(
                JobRun(
                    id=run_id,
                    job=job,
                    scope=_scope(arguments),
                    started_at=started,
                    finished_at=None,
                    outcome="running",
                    counts={},
                    error=None,
                )
            )
        logger.info("job %s started", job, extra={"arguments": dict(arguments or {})})
        try:
            counts = await function(context, **(arguments or {}))
        except Exception as error:
            described = describe_error(error)
            await _finish(context, job, run_id, started, "failure", {}, described)
            # The description, not the traceback: a database error's text carries SQL.
            logger.error("job %s failed: %s", job, described)
            raise
        await _finish(context, job, run_id, started, "success", counts, None)
        logger.info("job %s finished", job, extra={"counts": counts})
        return counts
    finally:
        current_run.reset(run_token)
        current_job.reset(job_token)


def _scope(arguments: Mapping[str, Any] | None) -> str | None:
    named = [f"{key}={value}" for key, value in (arguments or {}).items() if value is not None]
    return ",".join(named)[:300] or None


async def _finish(
    context: JobContext,
    job: str,
    run_id: str,
    started: datetime,
    outcome: str,
    counts: Counts,
    error: str | None,
) -> None:
    finished = context.clock()
    seconds = max((finished - started).total_seconds(), 0.0)
    async with context.sessions() as session, session.begin():
        await session.execute(
            sa.update(JobRun)
            .where(JobRun.id == run_id)
            .values(finished_at=finished, outcome=outcome, counts=counts, error=error)
        )
        statement = upsert_insert(session, JobStat).values(
            job=job, outcome=outcome, runs=1, seconds=seconds, last_finished_at=finished
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[JobStat.job, JobStat.outcome],
                set_={
                    "runs": JobStat.runs + 1,
                    "seconds": JobStat.seconds + seconds,
                    "last_finished_at": statement.excluded.last_finished_at,
                },
            )
        )


def describe_error(error: BaseException) -> str:
    """What a failed run records: the kind of error, never SQL, parameters or secrets."""
    if isinstance(error, sa_exc.DBAPIError):
        return f"database error: {type(error.orig).__name__}"
    if isinstance(error, RedisError):
        return f"redis error: {type(error).__name__}"
    return f"{type(error).__name__}: {str(error)[:500]}"


def transient(error: BaseException) -> bool:
    """A fault that a later attempt may not meet: the database or Redis unreachable."""
    return isinstance(error, Unavailable | RedisError) or database_unreachable(error)


# --- what operators see -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    """A scheduled job as /ops/jobs shows it."""

    job: str
    every: timedelta
    last_run: JobRun | None
    last_success_at: datetime | None
    next_due_at: datetime
    overdue: bool


async def job_statuses(session: AsyncSession, now: datetime, since: datetime) -> list[JobStatus]:
    """Each scheduled job with its last run, last success and next due time.

    Only the periodic sweeps count (runs with no scope), not the runs a request enqueued for one
    user or credential. A job is overdue when its sweep has not succeeded for two intervals,
    counted from its last success, or from `since` (when this process started) if it never did.
    """
    statuses = []
    for schedule in SCHEDULES:
        # The periodic sweeps only: a run for one user or credential says nothing about beat.
        sweeps = sa.select(JobRun).where(JobRun.job == schedule.job, JobRun.scope.is_(None))
        last_run = await session.scalar(
            sweeps.order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1)
        )
        last_success_at = await session.scalar(
            sweeps.where(JobRun.outcome == "success").with_only_columns(
                sa.func.max(JobRun.finished_at)
            )
        )
        reference = last_success_at or since
        next_due_at = (last_run.started_at if last_run is not None else since) + schedule.every
        statuses.append(
            JobStatus(
                job=schedule.job,
                every=schedule.every,
                last_run=last_run,
                last_success_at=last_success_at,
                next_due_at=next_due_at,
                overdue=now > reference + 2 * schedule.every,
            )
        )
    return statuses


async def job_totals(session: AsyncSession) -> list[JobStat]:
    """Runs and seconds per job and outcome since the database was created (for /metrics)."""
    return list(await session.scalars(sa.select(JobStat).order_by(JobStat.job, JobStat.outcome)))
