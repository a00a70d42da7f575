"""Secret generation, hashing (argon2id for client secrets, SHA-256 for random tokens)
and constant-time checks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from domain.errors import Unavailable

SECRET_BYTES = 32  # 256 bits
# Work admitted to the argon2 pool (running + queued) per worker thread, unless
# M2M_ARGON2_MAX_PENDING says otherwise: beyond it a caller is refused at once.
PENDING_PER_WORKER = 4
OVERLOAD_RETRY_AFTER_SECONDS = 1

T = TypeVar("T")


def new_secret() -> str:
    """A fresh random secret of 256 bits, URL-safe."""
    return secrets.token_urlsafe(SECRET_BYTES)


def sha256_hex(value: str) -> str:
    """Lookup hash for random 256-bit tokens: no guessing attack exists on that much entropy."""
    return hashlib.sha256(value.encode()).hexdigest()


def equal(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_kib: int = 19456
    parallelism: int = 1


class Overloaded(Unavailable):
    """The argon2 pool has as much work waiting as it may: answer now rather than queue."""

    def __init__(self) -> None:
        super().__init__("Too many authentications in progress; retry shortly")
        self.retry_after = OVERLOAD_RETRY_AFTER_SECONDS


class SecretHasher:
    """argon2id hashing and verification, run on a bounded thread pool off the event loop.

    At most `max_pending` jobs (running and queued) are admitted; one more raises Overloaded
    at once, so a burst is answered 503 in microseconds instead of waiting seconds in a queue.
    """

    def __init__(
        self,
        parameters: Argon2Parameters,
        workers: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        worker_count = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=worker_count, thread_name_prefix="argon2")
        self._max_pending = (
            max_pending if max_pending is not None else PENDING_PER_WORKER * worker_count
        )
        self._pending = 0
        # Released from the pool's threads when a job ends, even if its caller went away.
        self._pending_lock = threading.Lock()
        # Verifying against this makes an unknown client cost what a known one costs.
        self._dummy_hash = self._hasher.hash(new_secret())

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished yet."""
        return self._pending

    async def hash(self, secret: str) -> str:
        return await self._run(self._hasher.hash, secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        """True if `secret` matches `encoded`; with no hash, spends the same work and says no."""
        target = encoded if encoded is not None else self._dummy_hash
        matched = await self._run(self._verify, target, secret)
        return matched and encoded is not None

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        with self._pending_lock:
            if self._pending >= self._max_pending:
                raise Overloaded()
            self._pending += 1
        try:
            job: Future[T] = self._pool.submit(work, *args)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _release(self, _job: object = None) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _verify(self, encoded: str, secret: str) -> bool:
        try:
            return self._hasher.verify(encoded, secret)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
