"""Secret generation (the recognisable shape with its checksum), hashing (argon2id for client
secrets, SHA-256 for random tokens) and constant-time checks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import string
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from domain.errors import Unavailable

SECRET_BYTES = 32  # 256 bits
# Work admitted to the argon2 pool (running + queued) per worker thread when neither a count
# (M2M_ARGON2_MAX_PENDING) nor a wait bound is given: beyond it a caller is refused at once.
PENDING_PER_WORKER = 4
# The count bound that stays when a wait bound admits (memory: a waiting request each).
PENDING_PER_WORKER_WITH_WAIT = 256
OVERLOAD_RETRY_AFTER_SECONDS = 1
# How much each finished job moves the running estimate of one job's duration.
JOB_SECONDS_WEIGHT = 0.2

T = TypeVar("T")


def new_secret() -> str:
    """A fresh random secret of 256 bits, URL-safe: the shape made before secrets had a prefix
    (still what the vendor's own secret and the argon2 dummy are)."""
    return secrets.token_urlsafe(SECRET_BYTES)


# --- the recognisable shape: <prefix>_<kind>_<random><checksum> -------------------------------

SecretKind = Literal["cs", "rt"]
CLIENT_SECRET: Final = "cs"
REFRESH_TOKEN: Final = "rt"
SECRET_KINDS: Final[tuple[SecretKind, ...]] = (CLIENT_SECRET, REFRESH_TOKEN)
BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
# 30 base62 characters are 178 random bits (at least 160 asked); the CRC32 of everything before
# it, in 6 base62 characters (62**6 > 2**32), as GitHub's own tokens carry.
RANDOM_CHARACTERS: Final = 30
CHECKSUM_CHARACTERS: Final = 6
DEFAULT_SECRET_PREFIX: Final = "m2m"
# The prefix names the environment: a letter, then letters or digits, 2 to 10 in all.
SECRET_PREFIX_PATTERN: Final = re.compile(r"[a-z][a-z0-9]{1,9}")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode("ascii")), CHECKSUM_CHARACTERS)


@dataclass(frozen=True)
class SecretShape:
    """The shape of the secrets this environment hands out, and the offline check of it.

    A value is `<prefix>_<kind>_<30 base62><6 base62 CRC32 of all before it>`. A value of that
    shape with a wrong checksum (or of the other kind) was never made here: it is refused without
    any argon2, database or Redis work. A value of any other shape (secrets made before the
    shape existed, or under another prefix) goes the ordinary way.
    """

    prefix: str = DEFAULT_SECRET_PREFIX

    @property
    def pattern(self) -> str:
        """The regular expression a scanner matches the secrets with (documented in README)."""
        kinds = "|".join(SECRET_KINDS)
        length = RANDOM_CHARACTERS + CHECKSUM_CHARACTERS
        return rf"\b{self.prefix}_(?:{kinds})_[0-9A-Za-z]{{{length}}}\b"

    def new(self, kind: SecretKind) -> str:
        """A fresh secret of `kind`, with its checksum."""
        head = f"{self.prefix}_{kind}_" + "".join(
            secrets.choice(BASE62) for _ in range(RANDOM_CHARACTERS)
        )
        return head + _checksum(head)

    def kind_of(self, value: str) -> SecretKind | None:
        """The kind of a value of this shape whose checksum is right; None for any other value."""
        kind = self._shaped_kind(value)
        if kind is None or not secrets.compare_digest(
            value[-CHECKSUM_CHARACTERS:], _checksum(value[:-CHECKSUM_CHARACTERS])
        ):
            return None
        return kind

    def refuses(self, value: str, expected: SecretKind) -> bool:
        """True when `value` has this shape but cannot be a `expected` secret made here: its
        checksum is wrong, or it is of the other kind. No I/O; microseconds."""
        kind = self._shaped_kind(value)
        return kind is not None and self.kind_of(value) != expected

    def shaped(self, value: str) -> bool:
        """`value` has this environment's shape (whatever its checksum)."""
        return self._shaped_kind(value) is not None

    def _shaped_kind(self, value: str) -> SecretKind | None:
        length = len(self.prefix) + 4 + RANDOM_CHARACTERS + CHECKSUM_CHARACTERS
        if len(value) != length or not value.startswith(f"{self.prefix}_"):
            return None
        kind = value[len(self.prefix) + 1 : len(self.prefix) + 3]
        if value[len(self.prefix) + 3] != "_" or kind not in SECRET_KINDS:
            return None
        if not all(character in _BASE62_SET for character in value[len(self.prefix) + 4 :]):
            return None
        return CLIENT_SECRET if kind == CLIENT_SECRET else REFRESH_TOKEN


_BASE62_SET: Final = frozenset(BASE62)


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

    Admission is a bounded wait. With `max_wait_seconds`, a job is admitted when the jobs ahead
    of it will be done within that bound (jobs ahead / worker threads * one job's duration,
    measured as jobs finish), so a burst queues for its turn as long as its turn comes soon
    enough; at most `max_pending` jobs (running and queued) are admitted in any case. A job
    beyond either bound raises Overloaded at once (503 with Retry-After in microseconds, not a
    wait of seconds). The count defaults to 256 per worker thread with a wait bound, and to 4
    per worker thread without one (then it is the only bound).
    """

    def __init__(
        self,
        parameters: Argon2Parameters,
        workers: int | None = None,
        max_pending: int | None = None,
        max_wait_seconds: float | None = None,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        worker_count = workers or os.cpu_count() or 1
        self._workers = worker_count
        self._pool = ThreadPoolExecutor(max_workers=worker_count, thread_name_prefix="argon2")
        per_worker = (
            PENDING_PER_WORKER if max_wait_seconds is None else PENDING_PER_WORKER_WITH_WAIT
        )
        self._max_pending = max_pending if max_pending is not None else per_worker * worker_count
        self._max_wait_seconds = max_wait_seconds
        self._pending = 0
        # Released from the pool's threads when a job ends, even if its caller went away.
        self._pending_lock = threading.Lock()
        # Verifying against this makes an unknown client cost what a known one costs; timing it
        # gives the first estimate of one job's duration.
        started = time.perf_counter()
        self._dummy_hash = self._hasher.hash(new_secret())
        self._job_seconds = time.perf_counter() - started

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished yet."""
        return self._pending

    @property
    def job_seconds(self) -> float:
        """The running estimate of one argon2 job's duration on a busy pool thread."""
        return self._job_seconds

    def _admits(self) -> bool:
        """Whether one more job may queue now (called with the pending lock held)."""
        if self._pending >= self._max_pending:
            return False
        if self._max_wait_seconds is None:
            return True
        waits_for = self._pending // self._workers * self._job_seconds
        return waits_for <= self._max_wait_seconds

    async def hash(self, secret: str) -> str:
        return await self._run(self._hasher.hash, secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        """True if `secret` matches `encoded`; with no hash, spends the same work and says no."""
        target = encoded if encoded is not None else self._dummy_hash
        matched = await self._run(self._verify, target, secret)
        return matched and encoded is not None

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        with self._pending_lock:
            if not self._admits():
                raise Overloaded()
            self._pending += 1
        try:
            job: Future[T] = self._pool.submit(self._timed, work, *args)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _timed(self, work: Callable[..., T], *args: str) -> T:
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            took = time.perf_counter() - started
            with self._pending_lock:
                self._job_seconds += (took - self._job_seconds) * JOB_SECONDS_WEIGHT

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
