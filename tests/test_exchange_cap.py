"""At most 100 usable refresh tokens per credential at any instant, also under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.models import RefreshToken
from domain.ratelimit import RateLimiter
from domain.secrets import sha256_hex
from tests.factories import Factory, cheapen_secret, is_usable, refresh_rows
from tests.steps import (
    EXCHANGE,
    INVALID_REFRESH,
    exchange_ok,
    refresh,
    refresh_ok,
    simple_credential,
)

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

CAP = 100
START = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


async def test_101st_exchange_retires_exactly_the_oldest_refresh_token(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await cheapen_secret(db, credential)
    issued: list[str] = []
    with freeze_time(START, real_asyncio=True) as frozen:
        for _ in range(CAP + 1):
            issued.append((await exchange_ok(client, credential))["refresh_token"])
            frozen.tick(timedelta(seconds=1))
        now = START + timedelta(seconds=CAP + 1)
        rows = {row.token_hash: row for row in await refresh_rows(db, credential.client_id)}
        assert len(rows) == CAP + 1
        oldest = rows[sha256_hex(issued[0])]
        assert oldest.revoked_at == START + timedelta(seconds=CAP)  # retired by the 101st
        assert [token for token in issued if is_usable(rows[sha256_hex(token)], now)] == issued[1:]

        response = await refresh(client, issued[0])
        assert (response.status_code, response.json()) == (401, INVALID_REFRESH)
        # A token retired by the cap is not a reused one: the others stay usable.
        await refresh_ok(client, issued[1])
        usable = [
            row for row in await refresh_rows(db, credential.client_id) if is_usable(row, now)
        ]
        assert len(usable) == CAP


async def test_refresh_at_the_cap_retires_nothing_but_the_token_presented(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await cheapen_secret(db, credential)
    with freeze_time(START, real_asyncio=True) as frozen:
        issued = []
        for _ in range(CAP):
            issued.append((await exchange_ok(client, credential))["refresh_token"])
            frozen.tick(timedelta(seconds=1))
        await refresh_ok(client, issued[-1])
        now = START + timedelta(seconds=CAP)
        rows = await refresh_rows(db, credential.client_id)
    assert len(rows) == CAP + 1
    assert [row.revoked_at for row in rows] == [None] * (CAP + 1)
    assert sum(is_usable(row, now) for row in rows) == CAP


async def _max_usable_while(
    sessions: async_sessionmaker[AsyncSession], client_id: str, done: asyncio.Event
) -> int:
    """The most usable refresh tokens of a credential seen in committed state until `done`."""
    highest = 0
    async with sessions() as session:
        while not done.is_set():
            count = await session.scalar(
                sa.select(sa.func.count())
                .select_from(RefreshToken)
                .where(
                    RefreshToken.client_id == client_id,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                    RefreshToken.expires_at > datetime.now(UTC),
                )
            )
            await session.commit()  # a fresh snapshot each time round
            highest = max(highest, count or 0)
    return highest


async def test_150_concurrent_exchanges_never_leave_more_than_100_usable_refresh_tokens(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    generous_limits: RateLimiter,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await cheapen_secret(db, credential)
    done = asyncio.Event()
    watcher = asyncio.create_task(_max_usable_while(sessions, credential.client_id, done))

    async def one_exchange() -> httpx.Response:
        return await client.post(EXCHANGE, json=credential.body)

    responses = await asyncio.gather(*(one_exchange() for _ in range(150)))
    done.set()
    highest = await watcher

    assert sorted({response.status_code for response in responses}) == [200]
    assert highest <= CAP
    now = datetime.now(UTC)
    rows = await refresh_rows(db, credential.client_id)
    assert len(rows) == 150
    usable = [row for row in rows if is_usable(row, now)]
    assert len(usable) == CAP
    newest = sorted(rows, key=lambda row: (row.created_at, row.id))[-CAP:]
    assert {row.id for row in usable} == {row.id for row in newest}
    retired = [row for row in rows if not is_usable(row, now)]
    assert all(row.revoked_at is not None and row.used_at is None for row in retired)
