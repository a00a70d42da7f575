"""Bringing a database to the head of the Alembic migrations (`m2m migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str, *, transaction_pooling: bool = False) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    config.attributes["transaction_pooling"] = transaction_pooling
    return config


def upgrade_to_head(database_url: str, *, transaction_pooling: bool = False) -> bool:
    """Create the database if it does not exist yet, then migrate it to head; True if this
    call created it. `transaction_pooling`: the URL names a pooler in transaction mode (see
    domain.db.create_engine)."""
    created = False
    if database_url.startswith("postgresql"):
        created = asyncio.run(_create_database_if_missing(database_url, transaction_pooling))
    elif database_url.startswith("sqlite"):
        database = make_url(database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            # SQLite makes the file on first connection; an empty one holds no database yet.
            created = not Path(database).exists() or Path(database).stat().st_size == 0
    command.upgrade(alembic_config(database_url, transaction_pooling=transaction_pooling), "head")
    return created


async def _create_database_if_missing(database_url: str, transaction_pooling: bool) -> bool:
    url = make_url(database_url)
    name = url.database
    if not name:
        return False
    server = url.set(drivername="postgresql", database="postgres")
    dsn = server.render_as_string(hide_password=False)
    try:
        # Behind a pooler in transaction mode, no statement is kept for reuse (see domain.db).
        connection = await asyncpg.connect(
            dsn, statement_cache_size=0 if transaction_pooling else 100
        )
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
