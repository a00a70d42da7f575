"""Engine and session factory; each process (API, worker) builds its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool


def create_engine(database_url: str, *, pooled: bool = True) -> AsyncEngine:
    """An engine for one event loop. `pooled=False` suits short-lived loops (Celery tasks)."""
    kwargs: dict[str, Any] = {}
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, **kwargs)
        _enable_sqlite_foreign_keys(engine)
        return engine
    if pooled:
        # No pre-ping: it costs a round trip on every checkout (about a quarter of a refresh).
        # A connection that died (PostgreSQL restarted) fails its request with a 503 and makes
        # SQLAlchemy invalidate the pool, so the next requests reconnect; recycling keeps
        # connections from outliving server-side idle timeouts.
        kwargs.update(pool_size=10, max_overflow=10, pool_timeout=5, pool_recycle=1800)
    else:
        kwargs["poolclass"] = NullPool
    return create_async_engine(database_url, **kwargs)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _enable_sqlite_foreign_keys(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
