"""Engine and session factory; each process (API, worker) builds its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

# How long a SQLite transaction waits for another one's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
# The waits on PostgreSQL that no setting changes (the README's "When PostgreSQL or Redis fail"):
# opening a connection, and waiting for a pooled one while all are in use.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
POOL_TIMEOUT_SECONDS: Final = 5.0
# A statement whose server stopped answering altogether (frozen, or cut off by the network) is
# given up this long after its statement_timeout would have ended it (closing its connection
# then takes up to 2 s more: SQLAlchemy tries a graceful close first).
UNANSWERED_MARGIN_SECONDS: Final = 2.0

# SQLSTATEs that mean "not now" rather than "never" (worth a later attempt, answered 503):
# classes 08 (connection exception), 53 (insufficient resources: too many connections) and 57
# (operator intervention: statement_timeout's query_canceled, admin shutdown, "the database
# system is starting up / shutting down"); lock_not_available (lock_timeout); and the
# serialization failures and deadlocks that PostgreSQL resolves by cancelling one party.
TRANSIENT_SQLSTATE_CLASSES: Final = ("08", "53", "57")
TRANSIENT_SQLSTATES: Final = frozenset({"55P03", "40001", "40P01"})


@dataclass(frozen=True)
class StatementTimeouts:
    """Bounds PostgreSQL enforces on every statement of an engine's connections."""

    statement_ms: int
    lock_ms: int


def create_engine(
    database_url: str,
    *,
    pooled: bool = True,
    timeouts: StatementTimeouts | None = None,
    transaction_pooling: bool = False,
) -> AsyncEngine:
    """An engine for one event loop. `pooled=False` suits short-lived loops (Celery tasks).

    With `timeouts`, PostgreSQL cancels a statement of its connections that runs, or waits for a
    lock, longer than they allow; the driver gives up on one left unanswered a little after.

    `transaction_pooling`: the URL names a pooler that hands each transaction to any server
    connection (PgBouncer's `pool_mode = transaction`). A statement prepared on one server
    connection is then unknown, or taken by another client's, on the next: statements are
    prepared under names of their own and never kept for reuse (one more parse per statement).

    Its errors and log lines never show the values bound to a statement (`hide_parameters`):
    they include hashes of tokens, and of what the caller presented as one.
    """
    kwargs: dict[str, Any] = {}
    if database_url.startswith("sqlite"):
        return _create_sqlite_engine(database_url, pooled=pooled)
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    if transaction_pooling:
        connect_args.update(TRANSACTION_POOLING_CONNECT_ARGS)
    if timeouts is not None:
        # Sent with the connection's startup message: no round trip of its own.
        connect_args["server_settings"] = {
            "statement_timeout": str(timeouts.statement_ms),
            "lock_timeout": str(timeouts.lock_ms),
        }
        connect_args["command_timeout"] = timeouts.statement_ms / 1000 + UNANSWERED_MARGIN_SECONDS
    if pooled:
        # No pre-ping: it costs a round trip on every checkout (about a quarter of a refresh).
        # A connection that died (PostgreSQL restarted) fails its request with a 503 and makes
        # SQLAlchemy invalidate the pool, so the next requests reconnect; recycling keeps
        # connections from outliving server-side idle timeouts.
        kwargs.update(
            pool_size=10, max_overflow=10, pool_timeout=POOL_TIMEOUT_SECONDS, pool_recycle=1800
        )
    else:
        kwargs["poolclass"] = NullPool
    return create_async_engine(
        database_url,
        hide_parameters=True,
        connect_args=connect_args,
        execution_options={TRANSACTION_POOLING: transaction_pooling},
        **kwargs,
    )


async def statement_connection(session: AsyncSession) -> AsyncConnection:
    """The session's connection for work that needs no transaction (one statement, or statements
    each complete on its own): under AUTOCOMMIT, so no BEGIN or COMMIT round trip. Behind a pooler
    in transaction mode, though, a statement run outside a transaction may be prepared on one
    server connection and run on another: there the work runs in the session's transaction, and
    the caller's commit or rollback ends it as it would have anyway."""
    if session.get_bind().get_execution_options().get(TRANSACTION_POOLING):
        return await session.connection()
    return await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


# The execution option that marks an engine created with `transaction_pooling`.
TRANSACTION_POOLING: Final = "m2m_transaction_pooling"


def _unique_statement_name() -> str:
    return f"__m2m_{uuid.uuid4().hex}__"


# What asyncpg (through SQLAlchemy) needs behind a pooler in transaction mode.
TRANSACTION_POOLING_CONNECT_ARGS: Final[dict[str, Any]] = {
    "statement_cache_size": 0,  # asyncpg's own cache
    "prepared_statement_cache_size": 0,  # SQLAlchemy's
    "prepared_statement_name_func": _unique_statement_name,
}


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _create_sqlite_engine(database_url: str, *, pooled: bool) -> AsyncEngine:
    """SQLite for `m2m dev`: WAL, foreign keys, and writers that queue instead of failing.

    SQLite has one writer at a time. A transaction begun the default (deferred) way that reads
    and then writes fails at once with "database is locked" when another connection committed
    in between, whatever the busy timeout: so every transaction begins IMMEDIATE, taking the
    write lock first and waiting up to the busy timeout for it. Transactions are therefore
    serialized (fine for one developer's process). Statements run under AUTOCOMMIT (the validity
    cache's fills) take no lock and, with WAL, never wait for a writer.

    The pool never makes a checkout wait: a request that holds the write lock may need a second
    connection for such a fill, and waiting for a connection held by a request that waits for
    that lock would be a deadlock.
    """
    kwargs: dict[str, Any] = (
        {"pool_size": 5, "max_overflow": -1} if pooled else {"poolclass": NullPool}
    )
    engine = create_async_engine(database_url, hide_parameters=True, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN (deferred, and only before DML) is replaced by ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # With WAL, NORMAL loses no data on a process crash, only on a power loss: dev mode.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def database_unreachable(error: BaseException) -> bool:
    """A database error that means "cannot answer now" (worth a later attempt), not a bug:
    unreachable, restarting, out of connections, or a statement or lock wait past its timeout."""
    from sqlalchemy import exc

    if isinstance(error, OSError | TimeoutError | exc.TimeoutError):
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """INSERT for `table` with ON CONFLICT clauses, in the session's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
