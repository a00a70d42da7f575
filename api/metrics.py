"""Prometheus metrics: validations, exchanges and refreshes by outcome (counted per process, and
merged across the processes of `m2m serve` through PROMETHEUS_MULTIPROC_DIR), plus the job
totals, which live in the database so that every process reports the same."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from domain.job_runs import JobStatus
from domain.models import JobStat

REQUESTS = Counter(
    "m2m_requests",
    "Validations, exchanges and refreshes answered, by operation and outcome.",
    ["operation", "outcome"],
)

# Routes counted, by path. /oauth/token serves both grants: its handler names the operation in
# the scope (OPERATION_KEY) once it knows the grant type.
OPERATIONS = {
    "/identity/resources/auth/v1/validate": "validation",
    "/oauth/introspect": "validation",
    "/identity/resources/auth/v2/api-token": "exchange",
    "/identity/resources/auth/v1/api-token": "exchange",
    "/identity/resources/auth/v2/api-token/token/refresh": "refresh",
    "/oauth/token": "exchange",
}
OPERATION_KEY = "m2m.operation"

OUTCOMES = {
    200: "success",
    201: "success",
    400: "bad_request",
    401: "rejected",
    403: "disabled",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limited",
    503: "unavailable",
}


def count_as(request: Request[Any, Any, Any], operation: str) -> None:
    """Count this request as `operation` (a route serving two, like /oauth/token)."""
    scope: dict[str, Any] = request.scope  # type: ignore[assignment]
    scope[OPERATION_KEY] = operation


def count_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: counts the answers of the routes in OPERATIONS by status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        operation = OPERATIONS.get(scope["path"]) if scope["type"] == ScopeType.HTTP else None
        if operation is None:
            await app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                named = scope.get(OPERATION_KEY, operation)
                outcome = OUTCOMES.get(message["status"], "error")
                REQUESTS.labels(named, outcome).inc()
            await send(message)

        await app(scope, receive, counted)

    return middleware


class _JobTotals:
    """Job metrics from the rows read for this scrape."""

    def __init__(
        self,
        totals: Sequence[JobStat],
        scheduled: Sequence[JobStatus],
    ) -> None:
        self._totals = totals
        self._scheduled = scheduled

    def collect(self) -> Iterable[Metric]:
        runs = CounterMetricFamily(
            "m2m_job_runs", "Job runs by job and outcome.", labels=["job", "outcome"]
        )
        seconds = CounterMetricFamily(
            "m2m_job_duration_seconds", "Time spent in job runs.", labels=["job", "outcome"]
        )
        last_success = GaugeMetricFamily(
            "m2m_job_last_success_timestamp_seconds",
            "When each job last finished successfully (Unix time); for a scheduled job, its"
            " periodic run.",
            labels=["job"],
        )
        overdue = GaugeMetricFamily(
            "m2m_job_overdue", "1 when a scheduled job missed two intervals.", labels=["job"]
        )
        successes = {t.job: t.last_finished_at for t in self._totals if t.outcome == "success"}
        for status in self._scheduled:
            overdue.add_metric([status.job], 1 if status.overdue else 0)
            successes.pop(status.job, None)
            if status.last_success_at is not None:
                successes[status.job] = status.last_success_at
        for total in self._totals:
            runs.add_metric([total.job, total.outcome], total.runs)
            seconds.add_metric([total.job, total.outcome], total.seconds)
        for job, moment in sorted(successes.items()):
            last_success.add_metric([job], _unix(moment))
        return [runs, seconds, last_success, overdue]


def exposition(totals: Sequence[JobStat], scheduled: Sequence[JobStatus]) -> bytes:
    """The text exposition of every metric of this service."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        requests = CollectorRegistry()
        multiprocess.MultiProcessCollector(requests)  # type: ignore[no-untyped-call]
    else:
        requests = REGISTRY
    jobs = CollectorRegistry()
    jobs.register(_JobTotals(totals, scheduled))
    return generate_latest(requests) + generate_latest(jobs)


def _unix(moment: datetime) -> float:
    return moment.timestamp()
