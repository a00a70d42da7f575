"""Runs of the background jobs: running one and recording it, and what operators see of them
(/ops/jobs and /metrics)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from domain.db import database_unreachable, upsert_insert
from domain.errors import Unavailable
from domain.jobs import JOBS, SCHEDULES, Counts, JobContext
from domain.logs import current_job, current_run
from domain.models import JobRun, JobStat

logger = logging.getLogger("m2m.jobs")


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
