"""One thin Celery task per job of domain/jobs.py; domain.job_runs.run_job records each run."""

from __future__ import annotations

from typing import Any

from celery import Task

from domain.job_runs import transient
from domain.jobs import (
    CASCADE_DELETIONS,
    DELETE_UNUSED_TOKENS,
    DELIVER_EVENTS,
    EXPIRE_TOKENS,
    PROPAGATE_M2M_SWITCH,
    PRUNE_AUDIT_EVENTS,
    PRUNE_REFRESH_TOKENS,
    RECONCILE_CACHE,
    WARN_EXPIRING_TOKENS,
    Counts,
)
from workers import runtime
from workers.celery_app import app, task_name


class TransientFault(Exception):
    """The database or Redis could not be reached: the task is retried with backoff."""


RETRYING: dict[str, Any] = {
    "bind": True,
    "autoretry_for": (TransientFault,),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 10,
}


def _run(job: str, **arguments: Any) -> Counts:
    try:
        return runtime.run(job, arguments)
    except Exception as error:
        if transient(error):
            raise TransientFault(f"{job}: {type(error).__name__}") from error
        raise


@app.task(name=task_name(EXPIRE_TOKENS), **RETRYING)
def expire_tokens(self: Task) -> Counts:
    return _run(EXPIRE_TOKENS)


@app.task(name=task_name(PRUNE_REFRESH_TOKENS), **RETRYING)
def prune_refresh_tokens(self: Task, client_id: str | None = None) -> Counts:
    return _run(PRUNE_REFRESH_TOKENS, client_id=client_id)


@app.task(name=task_name(CASCADE_DELETIONS), **RETRYING)
def cascade_deletions(
    self: Task, user_id: str | None = None, tenant_id: str | None = None
) -> Counts:
    return _run(CASCADE_DELETIONS, user_id=user_id, tenant_id=tenant_id)


@app.task(name=task_name(PROPAGATE_M2M_SWITCH), **RETRYING)
def propagate_m2m_switch(self: Task) -> Counts:
    return _run(PROPAGATE_M2M_SWITCH)


@app.task(name=task_name(RECONCILE_CACHE), **RETRYING)
def reconcile_cache(self: Task) -> Counts:
    return _run(RECONCILE_CACHE)


@app.task(name=task_name(DELETE_UNUSED_TOKENS), **RETRYING)
def delete_unused_tokens(self: Task) -> Counts:
    return _run(DELETE_UNUSED_TOKENS)


@app.task(name=task_name(PRUNE_AUDIT_EVENTS), **RETRYING)
def prune_audit_events(self: Task) -> Counts:
    return _run(PRUNE_AUDIT_EVENTS)


@app.task(name=task_name(DELIVER_EVENTS), **RETRYING)
def deliver_events(self: Task) -> Counts:
    return _run(DELIVER_EVENTS)


@app.task(name=task_name(WARN_EXPIRING_TOKENS), **RETRYING)
def warn_expiring_tokens(self: Task) -> Counts:
    return _run(WARN_EXPIRING_TOKENS)
