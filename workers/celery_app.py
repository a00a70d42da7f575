"""The Celery app: Redis broker, JSON only, late acks, and the beat schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from domain.jobs import SCHEDULES
from domain.logs import configure_logging
from domain.settings import Settings

TASK_PREFIX = "m2m."

app = Celery("m2m")


def task_name(job: str) -> str:
    return TASK_PREFIX + job


def configure(celery: Celery, settings: Settings) -> Celery:
    """Point the app at the broker of `settings`, with the options every process shares."""
    celery.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options={
            # Every key of this deployment (or test run) under one prefix.
            "global_keyprefix": f"{settings.redis_prefix}celery:",
            # A task taken by a worker that died is delivered again after this long.
            "visibility_timeout": settings.broker_visibility_timeout,
            # ... looked for every 10 s (kombu's default scans only every 10th look: 100 s).
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            # A broker that accepts and never answers must not hold a request either.
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
        },
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue="m2m",
        # A task is acknowledged when it ends, and given back if its worker dies meanwhile:
        # every job is idempotent, so running one again is safe and losing one is not.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # An enqueue must not hold a request for long when the broker is down; the periodic
        # sweep finishes what a lost message would have done.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_timeout=1,
        worker_hijack_root_logger=False,
        # Events for Flower: what each worker runs, and when it started and ended.
        worker_send_task_events=True,
        task_send_sent_event=True,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(),
    )
    return celery


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Each periodic job every interval; a run not started within its interval is dropped
    (the next one does the same work), so a stopped worker does not come back to a pile."""
    return {
        schedule.job: {
            "task": task_name(schedule.job),
            "schedule": schedule.every.total_seconds(),
            "options": {"expires": schedule.every.total_seconds()},
        }
        for schedule in SCHEDULES
    }


@setup_logging.connect
def _json_logs(**_: Any) -> None:
    """Workers and beat log one JSON object per line, with the job and run id of each record."""
    configure_logging()
