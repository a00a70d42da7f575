"""Runs one domain job from a (synchronous) Celery task, in an event loop of its own.

asyncpg connections belong to the loop that opened them, so every run builds its engine
(without a pool) and its Redis client inside `asyncio.run`, and closes them before returning.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from redis.asyncio import Redis

from domain.db import create_engine, create_session_factory
from domain.job_runs import run_job
from domain.jobs import JOB_TIMEOUTS, Counts, job_context
from domain.keys import MasterKey
from domain.revocations import RevocationFeed
from domain.settings import Settings, load_settings
from domain.validity import ValidityCache

REDIS_TIMEOUT_SECONDS = 2.0


@cache
def worker_settings() -> Settings:
    return load_settings(os.environ, mode="worker")


def run(job: str, arguments: Mapping[str, Any]) -> Counts:
    return asyncio.run(_run(worker_settings(), job, arguments))


async def _run(settings: Settings, job: str, arguments: Mapping[str, Any]) -> Counts:
    engine = create_engine(
        settings.database_url,
        pooled=False,
        timeouts=JOB_TIMEOUTS,
        transaction_pooling=settings.database_transaction_pooling,
    )
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    sessions = create_session_factory(engine)
    try:
        validity = ValidityCache(redis=redis, sessions=sessions, prefix=settings.redis_prefix)
        context = job_context(
            settings,
            sessions,
            validity,
            MasterKey(settings.master_key) if settings.master_key else None,
            RevocationFeed(
                redis, settings.redis_prefix, settings.revocation_feed_retention_seconds
            ),
        )
        return await run_job(context, job, arguments)
    finally:
        await redis.aclose()
        await engine.dispose()
