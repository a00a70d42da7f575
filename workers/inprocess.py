"""The job runner of `m2m dev` (and of tests without Celery): the same domain jobs, run as
asyncio tasks of the API process, the periodic ones on their schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from domain.job_runs import run_job, transient
from domain.jobs import SCHEDULES, JobContext, Schedule

logger = logging.getLogger("m2m.jobs")

TICK_SECONDS = 1.0
RETRIES = 3


class InProcessJobs:
    """`hold` keeps enqueued jobs until `drain()` runs them: tests decide when a job's effect
    may appear, as a worker that is slow to pick them up would."""

    def __init__(
        self,
        context: JobContext,
        schedules: Sequence[Schedule] = SCHEDULES,
        *,
        hold: bool = False,
    ) -> None:
        self._context = context
        self._schedules = schedules
        self._hold = hold
        self._held: list[tuple[str, dict[str, Any]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Run every periodic job now, then each again whenever its interval has passed."""
        if self._ticker is None and self._schedules:
            self._ticker = asyncio.create_task(self._tick_forever(), name="m2m-jobs")

    async def enqueue(self, job: str, **arguments: Any) -> None:
        if self._hold:
            self._held.append((job, arguments))
            return
        task = asyncio.create_task(self._run(job, arguments), name=f"m2m-job-{job}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Run the held jobs, in order, and wait for every enqueued job to finish."""
        while self._held:
            job, arguments = self._held.pop(0)
            await self._run(job, arguments)
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        await self.drain()

    async def _run(self, job: str, arguments: dict[str, Any]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                await run_job(self._context, job, arguments)
                return
            except Exception as error:
                if not transient(error) or attempt == RETRIES:
                    logger.error("job %s failed: %s", job, type(error).__name__)
                    return
                await asyncio.sleep(2**attempt)

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = {schedule.job: loop.time() for schedule in self._schedules}
        while True:
            for schedule in self._schedules:
                if loop.time() >= due[schedule.job]:
                    due[schedule.job] = loop.time() + schedule.every.total_seconds()
                    await self._run(schedule.job, {})
            await asyncio.sleep(TICK_SECONDS)
