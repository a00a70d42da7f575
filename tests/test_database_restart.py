"""Pooled connections that PostgreSQL dropped cost at most a 503, never a 500 or a stuck API."""

from __future__ import annotations

import asyncpg
import httpx

from domain.settings import Settings
from tests.suite import _plain_dsn

CONFIG = "/identity/resources/configurations/v1"


async def test_the_api_recovers_by_itself_after_its_connections_are_killed(
    client: httpx.AsyncClient, vendor: dict[str, str], settings: Settings
) -> None:
    for _ in range(3):  # fill the pool with live connections
        assert (await client.get(CONFIG, headers=vendor)).status_code == 200
    admin = await asyncpg.connect(_plain_dsn(settings.database_url))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed >= 1

    statuses = [(await client.get(CONFIG, headers=vendor)).status_code for _ in range(4)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200, statuses
    assert statuses.count(503) <= 1, statuses
