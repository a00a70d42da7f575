"""The API's side of Celery: send a job to the broker after the commit it must see."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from celery import Celery

from domain.settings import Settings
from workers.celery_app import configure, task_name

logger = logging.getLogger("m2m.jobs")


# After a failed enqueue, enqueues are skipped this long: a broker that is down costs one slow
# request per process per interval, not every request.
BROKER_DOWN_SECONDS = 5.0
# An enqueue holds its request at most this long. A publish still going on then (a broker that
# is slow rather than down) finishes, or fails and is logged, on its own.
ENQUEUE_WAIT_SECONDS = 0.25


class CeleryJobQueue:
    """Enqueues jobs for the Celery workers. A failed enqueue is logged, never raised: the
    request's own promise (a token invalid now) is already kept, and the periodic runs of the
    same jobs finish the cleanup."""

    def __init__(self, settings: Settings) -> None:
        self._celery = configure(Celery("m2m-api", set_as_current=False), settings)
        self._down_until = -math.inf
        self._sending: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        return None

    async def enqueue(self, job: str, **arguments: Any) -> None:
        if time.monotonic() < self._down_until:
            logger.warning("broker down: %s not enqueued; its periodic run will do the work", job)
            return
        # kombu's publish is blocking I/O: off the event loop.
        sending = asyncio.ensure_future(asyncio.to_thread(self._send, job, arguments))
        try:
            await asyncio.wait_for(asyncio.shield(sending), ENQUEUE_WAIT_SECONDS)
        except TimeoutError:
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
            logger.warning("the broker is slow: %s is still being sent", job)

    def _send(self, job: str, arguments: dict[str, Any]) -> None:
        try:
            self._celery.send_task(task_name(job), kwargs=arguments, ignore_result=True)
        except Exception as error:
            self._down_until = time.monotonic() + BROKER_DOWN_SECONDS
            logger.error(
                "could not enqueue %s (%s); its periodic run will do the work",
                job,
                type(error).__name__,
            )

    async def close(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
        await asyncio.to_thread(self._celery.close)
