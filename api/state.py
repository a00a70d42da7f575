"""What one API process holds for its lifetime: settings, engine, keys and authenticators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from domain.auth import EndUserVerifier, VendorAuthenticator
from domain.keys import MasterKey, Signer
from domain.secrets import SecretHasher
from domain.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    master_key: MasterKey
    vendor: VendorAuthenticator
    end_users: EndUserVerifier | None
    hasher: SecretHasher
    signer: Signer
