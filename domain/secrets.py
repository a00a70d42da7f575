"""Secret generation, hashing (argon2id for client secrets, SHA-256 for random tokens)
and constant-time checks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

SECRET_BYTES = 32  # 256 bits


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


class SecretHasher:
    """argon2id hashing and verification, run on a bounded thread pool off the event loop."""

    def __init__(self, parameters: Argon2Parameters, workers: int | None = None) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=workers or os.cpu_count() or 1, thread_name_prefix="argon2"
        )
        # Verifying against this makes an unknown client cost what a known one costs.
        self._dummy_hash = self._hasher.hash(new_secret())

    async def hash(self, secret: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        """True if `secret` matches `encoded`; with no hash, spends the same work and says no."""
        loop = asyncio.get_running_loop()
        target = encoded if encoded is not None else self._dummy_hash
        matched = await loop.run_in_executor(self._pool, self._verify, target, secret)
        return matched and encoded is not None

    def _verify(self, encoded: str, secret: str) -> bool:
        try:
            return self._hasher.verify(encoded, secret)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
