"""Signing keys: created once on first start, private halves encrypted with the master key."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import start_services
from domain.keys import MasterKey, MasterKeyMismatch
from domain.models import SigningKey
from domain.schema import upgrade_to_head
from domain.settings import Settings
from tests.suite import PG_SERVER, _plain_dsn


@pytest.fixture
async def fresh_settings(settings: Settings) -> AsyncIterator[Settings]:
    """Settings pointing at a newly migrated database with no signing key yet."""
    name = f"m2m_keys_{uuid.uuid4().hex[:10]}"
    url = f"{PG_SERVER}/{name}"
    await asyncio.to_thread(upgrade_to_head, url)
    yield dataclasses.replace(settings, database_url=url)
    connection = await asyncpg.connect(_plain_dsn(f"{PG_SERVER}/postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def test_processes_starting_together_create_exactly_one_key(
    fresh_settings: Settings,
) -> None:
    started = await asyncio.gather(*(start_services(fresh_settings) for _ in range(4)))
    try:
        assert len({services.signer.kid for services in started}) == 1
        async with started[0].sessions() as session:
            count = await session.scalar(sa.select(sa.func.count()).select_from(SigningKey))
        assert count == 1
    finally:
        for services in started:
            await services.close()


async def test_private_key_is_stored_encrypted_with_the_master_key(
    db: AsyncSession, settings: Settings, client: object
) -> None:
    row = await db.scalar(sa.select(SigningKey).where(SigningKey.retired_at.is_(None)))
    assert row is not None
    stored = row.private_key_encrypted
    with pytest.raises(ValueError, match="deserialize"):
        serialization.load_der_private_key(stored, password=None)
    assert b"PRIVATE KEY" not in stored
    decrypted = MasterKey(settings.master_key).decrypt(stored, row.kid.encode())
    private_key = serialization.load_der_private_key(decrypted, password=None)
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert public_pem == row.public_key_pem
    other = MasterKey(b"x" * 32)
    with pytest.raises(MasterKeyMismatch):
        other.decrypt(stored, row.kid.encode())
