"""What one API process holds for its lifetime: settings, engine, keys, cache, limits, debounce."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from domain.active_tokens import ActiveTokenLists
from domain.auth import EndUserVerifier, VendorAuthenticator
from domain.jobs import JobQueue
from domain.keys import KeyRing, MasterKey, Signer
from domain.last_used import UsageRecorder
from domain.leaks import GitHubScanningKeys
from domain.ratelimit import RateLimiter
from domain.revocations import RevocationFeed
from domain.secrets import SecretHasher, SecretShape
from domain.settings import Settings
from domain.validity import ValidityCache

# A credential's refresh tokens are pruned after an exchange at most this often (per process).
PRUNE_AFTER_EXCHANGE_SECONDS = 60.0


class Debounce:
    """Says yes to a key at most once per interval (per process): an exchange enqueues the prune
    of its credential, but a busy credential need not be pruned on every exchange."""

    def __init__(self, interval_seconds: float, max_keys: int = 100_000) -> None:
        self._interval = interval_seconds
        self._max_keys = max_keys
        self._last: dict[str, float] = {}

    def due(self, key: str, clock: float) -> bool:
        last = self._last.get(key)
        if last is not None and clock - last < self._interval:
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = clock
        return True


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    master_key: MasterKey
    vendor: VendorAuthenticator
    end_users: EndUserVerifier | None
    hasher: SecretHasher
    keyring: KeyRing
    redis: Redis | None  # None in `m2m dev`
    validity: ValidityCache
    # /active's answers, kept while the validity cache says nothing changed.
    active_lists: ActiveTokenLists
    limiter: RateLimiter
    # The shape of new client secrets and refresh tokens, and their offline check.
    secret_shape: SecretShape
    # GitHub's secret-scanning public keys, read when a report names one not known yet.
    github_keys: GitHubScanningKeys
    jobs: JobQueue
    feed: RevocationFeed
    # When this process started: /ops/jobs counts a never-run job overdue from here.
    started_at: datetime
    prune_debounce: Debounce = field(default_factory=lambda: Debounce(PRUNE_AFTER_EXCHANGE_SECONDS))
    # Token uses seen by this process and not yet written (domain/last_used.py).
    usage: UsageRecorder = field(default_factory=UsageRecorder)

    @property
    def signer(self) -> Signer:
        """The key that signs new tokens now (it changes when any process rotates)."""
        return self.keyring.signer

    async def close(self) -> None:
        # The uses seen since the last periodic write, before the database goes away.
        await self.usage.write(self.sessions)
        await self.jobs.close()
        await self.validity.close()
        await self.feed.close()
        self.hasher.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
