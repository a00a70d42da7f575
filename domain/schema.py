"""Bringing a database to the head of the Alembic migrations (`m2m migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> bool:
    """Create the database if it does not exist yet, then migrate it to head; True if this
    call created it."""
    created = False
    if database_url.startswith("postgresql"):
        created = asyncio.run(_create_database_if_missing(database_url))
    elif database_url.startswith("sqlite"):
        database = make_url(database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            # SQLite makes the file on first connection; an empty one holds no database yet.
            created = not Path(database).exists() or Path(database).stat().st_size == 0
    command.upgrade(alembic_config(database_url), "head")
    return created


async def _create_database_if_missing(database_url: str) -> bool:
    url = make_url(database_url)
    name = url.database
    if not name:
        return False
    server = url.set(drivername="postgresql", database="postgres")
    dsn = server.render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn)
    except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError):
        return False  # no maintenance database to ask, or no right to: the migration says more
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            quoted = '"' + name.replace('"', '""') + '"'
            await connection.execute(f"CREATE DATABASE {quoted}")
        return not exists
    finally:
        await connection.close()
