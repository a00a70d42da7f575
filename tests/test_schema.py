"""`m2m migrate`: an empty database reaches head, equal to the models; reruns change nothing."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Base
from domain.schema import alembic_config, upgrade_to_head
from tests.suite import PG_SERVER, _plain_dsn

# The built-in permissions: the six over tokens, and the two over the account token policy.
FE_SECURE = {
    f"fe.secure.{action}.{resource}"
    for action in ("read", "write", "delete")
    for resource in ("userApiTokens", "tenantApiTokens")
} | {"fe.secure.read.audits", "fe.secure.read.tokenPolicy", "fe.secure.write.tokenPolicy"}


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("unused")).get_current_head()
    assert head is not None
    return head


async def test_migrated_schema_equals_the_models(db: AsyncSession) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    connection = await db.connection()
    differences = await connection.run_sync(diff)
    assert differences == []


async def test_migration_seeds_the_environment_and_the_built_in_permissions(
    db: AsyncSession,
) -> None:
    keys = set(
        (await db.execute(text("SELECT key FROM permissions WHERE fe_permission"))).scalars()
    )
    assert keys == FE_SECURE
    row = (await db.execute(text("SELECT api_tokens_enabled, m2m_strategy FROM environment"))).one()
    assert tuple(row) == (True, "ClientCredentials")


def test_migrate_creates_an_empty_database_and_reaches_head(scratch_url: str) -> None:
    upgrade_to_head(scratch_url)
    upgrade_to_head(scratch_url)  # a second run changes nothing and does not fail

    async def current() -> str | None:
        connection = await asyncpg.connect(_plain_dsn(scratch_url))
        try:
            value = await connection.fetchval("SELECT version_num FROM alembic_version")
            permissions = await connection.fetchval(
                "SELECT count(*) FROM permissions WHERE fe_permission"
            )
            assert permissions == len(FE_SECURE)
            return str(value)
        finally:
            await connection.close()

    assert asyncio.run(current()) == _head()


def test_downgrade_to_base_and_upgrade_again(scratch_url: str) -> None:
    upgrade_to_head(scratch_url)
    config = alembic_config(scratch_url)
    command.downgrade(config, "base")

    async def tables() -> set[str]:
        connection = await asyncpg.connect(_plain_dsn(scratch_url))
        try:
            rows = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            return {row["tablename"] for row in rows}
        finally:
            await connection.close()

    assert asyncio.run(tables()) <= {"alembic_version"}
    upgrade_to_head(scratch_url)
    assert "access_tokens" in asyncio.run(tables())


def test_an_older_database_with_data_migrates_to_head(scratch_url: str) -> None:
    """A database at 0001 holding a refresh token reaches head; the token starts its own family."""
    asyncio.run(_create_empty(scratch_url))
    command.upgrade(alembic_config(scratch_url), "0001")

    async def seed() -> None:
        connection = await asyncpg.connect(_plain_dsn(scratch_url))
        try:
            await connection.execute(
                "INSERT INTO tenants (id, name, created_at, updated_at)"
                " VALUES ('t', 'T', now(), now());"
                "INSERT INTO client_credentials (client_id, tenant_id, metadata, secret_hash,"
                " created_at, updated_at) VALUES ('c', 't', '{}', 'h', now(), now());"
                "INSERT INTO refresh_tokens (id, client_id, token_hash, created_at, expires_at)"
                " VALUES ('r', 'c', 'x', now(), now() + interval '1 day');"
            )
        finally:
            await connection.close()

    asyncio.run(seed())
    upgrade_to_head(scratch_url)

    async def family() -> str:
        connection = await asyncpg.connect(_plain_dsn(scratch_url))
        try:
            return str(await connection.fetchval("SELECT family_id FROM refresh_tokens"))
        finally:
            await connection.close()

    assert asyncio.run(family()) == "r"


async def _create_empty(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(_plain_dsn(f"{PG_SERVER}/postgres"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
