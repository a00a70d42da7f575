"""Behind a pooler in transaction mode (README "Several hosts"): with
M2M_DATABASE_TRANSACTION_POOLING=true no statement is kept prepared for reuse, and work that
would run outside a transaction runs inside one, since a pooler may hand each transaction (and
each statement outside one) to a different server connection."""

from __future__ import annotations

import sqlalchemy as sa

from domain.db import create_engine, create_session_factory, statement_connection
from domain.settings import load_settings
from tests.suite import VALID

PREPARED = sa.text("SELECT name, statement FROM pg_prepared_statements")


def test_the_setting_is_off_unless_asked() -> None:
    assert load_settings(VALID).database_transaction_pooling is False
    asked = load_settings({**VALID, "M2M_DATABASE_TRANSACTION_POOLING": "true"})
    assert asked.database_transaction_pooling is True


async def test_statements_are_prepared_under_names_of_their_own_and_never_kept(
    database_url: str,
) -> None:
    probe = "SELECT 'transaction pooling' AS probe"
    kept: dict[bool, list[str]] = {}
    listing_names: dict[bool, list[str]] = {}
    for pooled in (False, True):
        engine = create_engine(database_url, transaction_pooling=pooled)
        try:
            async with engine.connect() as connection:
                for _ in range(3):
                    assert (await connection.execute(sa.text(probe))).scalar() == (
                        "transaction pooling"
                    )
                listings = [list(await connection.execute(PREPARED)) for _ in range(2)]
        finally:
            await engine.dispose()
        kept[pooled] = [row.statement for row in listings[0] if row.statement == probe]
        # The listing sees itself, prepared while it runs.
        listing_names[pooled] = [
            row.name for listing in listings for row in listing if "pg_prepared" in row.statement
        ]

    # Directly on PostgreSQL a statement is prepared once and kept for reuse; behind a pooler
    # none is kept (the next transaction may be on another server connection), and each is
    # prepared under a name no other client's statement can hold.
    assert kept == {False: [probe], True: []}
    assert len(listing_names[True]) == 2
    assert len(set(listing_names[True])) == 2
    assert all(name.startswith("__m2m_") for name in listing_names[True])


async def test_work_outside_a_transaction_runs_in_one_behind_the_pooler(database_url: str) -> None:
    began = {}
    for pooled in (False, True):
        engine = create_engine(database_url, transaction_pooling=pooled)
        try:
            async with create_session_factory(engine)() as session:
                connection = await statement_connection(session)
                # Two statements: in a transaction, the second sees the first's snapshot.
                first = await connection.scalar(sa.text("SELECT txid_current()"))
                second = await connection.scalar(sa.text("SELECT txid_current()"))
                began[pooled] = first == second
                await session.rollback()
        finally:
            await engine.dispose()

    assert began == {False: False, True: True}
