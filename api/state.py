"""What one API process holds for its lifetime: settings, engine, keys, cache and limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from domain.auth import EndUserVerifier, VendorAuthenticator
from domain.keys import KeyRing, MasterKey, Signer
from domain.ratelimit import RateLimiter
from domain.secrets import SecretHasher
from domain.settings import Settings
from domain.validity import ValidityCache


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
    redis: Redis
    validity: ValidityCache
    limiter: RateLimiter

    @property
    def signer(self) -> Signer:
        """The key that signs new tokens now (it changes when any process rotates)."""
        return self.keyring.signer

    async def close(self) -> None:
        await self.validity.close()
        self.hasher.close()
        await self.redis.aclose()
        await self.engine.dispose()
