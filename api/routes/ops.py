"""What operators watch: /ops/jobs, /metrics, and the /health probes."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from litestar import MediaType, Response, get
from litestar.di import NamedDependency

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.errors import retry_after_headers
from api.guards import METRICS_READER, VENDOR_ONLY
from api.metrics import exposition
from api.schemas.common import iso
from domain.errors import Unavailable
from domain.job_runs import JobStatus, job_statuses, job_totals
from domain.jobs import EXPIRE_TOKENS

PROBE_TIMEOUT_SECONDS = 2.0


def _status_response(status: JobStatus) -> dict[str, Any]:
    run = status.last_run
    return {
        "job": status.job,
        "everySeconds": int(status.every.total_seconds()),
        "lastRun": None
        if run is None
        else {
            "id": run.id,
            "startedAt": iso(run.started_at),
            "finishedAt": iso(run.finished_at),
            "outcome": run.outcome,
            "counts": run.counts,
            "error": run.error,
        },
        "lastSuccessAt": iso(status.last_success_at),
        "nextDueAt": iso(status.next_due_at),
        "overdue": status.overdue,
    }


@get("/ops/jobs", dependencies=VENDOR_ONLY)
async def list_jobs(
    vendor: CallerDep, db_session: SessionDep, services: ServicesDep, now: NowDep
) -> dict[str, Any]:
    statuses = await job_statuses(db_session, now, services.started_at)
    return {"jobs": [_status_response(status) for status in statuses]}


@get(
    "/metrics",
    media_type="text/plain; version=0.0.4; charset=utf-8",
    dependencies=METRICS_READER,
)
async def metrics(
    metrics_reader: NamedDependency[bool],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> bytes:
    statuses = await job_statuses(db_session, now, services.started_at)
    totals = await job_totals(db_session)
    return exposition(totals, statuses)


@get("/health/live", media_type=MediaType.JSON)
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@get("/health/ready", media_type=MediaType.JSON)
async def ready(services: ServicesDep, now: NowDep) -> Response[dict[str, Any]]:
    """503 unless PostgreSQL and Redis answer. An overdue expiry job is reported ("degraded")
    but keeps the process ready: expiry is enforced on every request anyway, and a stopped beat
    must not take every API process out of its load balancer."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), services.sessions() as session:
            await session.execute(sa.text("SELECT 1"))
            statuses = await job_statuses(session, now, services.started_at)
        checks["database"] = "ok"
        expiry = next(status for status in statuses if status.job == EXPIRE_TOKENS)
        checks["expiryJob"] = "overdue" if expiry.overdue else "ok"
    except Exception:
        checks["database"] = "unavailable"
    if services.redis is not None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                await services.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unavailable"
    serving = all(checks.get(name) == "ok" for name in ("database", "redis") if name in checks)
    if not serving:
        status = "not ready"
    elif checks.get("expiryJob") == "overdue":
        status = "degraded"
    else:
        status = "ready"
    if serving:
        return Response({"status": status, "checks": checks}, status_code=200)
    # Like every other 503 (an `errors` list, and Retry-After): the dependency may be back in a
    # second.
    unavailable = sorted(name for name, state in checks.items() if state == "unavailable")
    return Response(
        {
            "errors": [f"Not ready: {', '.join(unavailable)} unavailable"],
            "status": status,
            "checks": checks,
        },
        status_code=503,
        headers=retry_after_headers(Unavailable("not ready")),
    )


ROUTES = [list_jobs, metrics, live, ready]
