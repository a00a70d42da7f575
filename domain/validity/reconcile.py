"""Reconcile: compare every validity-cache entry with PostgreSQL and repair those that disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.models import AccessToken, ClientCredential, Tenant, User
from domain.validity.entries import (
    DELETED,
    ENV_KEY,
    Principal,
    Table,
    TokenRow,
    Value,
    _Deleted,
    _microseconds,
    _token_key,
    incarnation,
)
from domain.validity.fills import _fill_statement, not_deleted


@dataclass(frozen=True)
class _Alive:
    """A token row that exists in PostgreSQL, with a tenant (and user) not deleted."""

    tenant_id: str
    user_id: str | None
    expires_at: datetime | None


_DROP: Final = object()


def _repair(key: str, cached: Value, truth: Value | _Alive | None) -> Value | object | None:
    """None if the entry agrees with the truth; else the tombstone to write, or _DROP."""
    if key == ENV_KEY:
        return None if cached == truth else truth
    if key.startswith(("tenant:", "user:")):
        assert isinstance(cached, Principal)
        alive = isinstance(truth, Principal) and truth.incarnation == cached.incarnation
        if cached.alive and not alive:
            return Principal(cached.incarnation, alive=False)
        if not cached.alive and alive:
            return _DROP
        return None
    if cached is DELETED:
        return _DROP if isinstance(truth, _Alive) else None
    if not isinstance(truth, _Alive):
        return DELETED
    assert isinstance(cached, TokenRow)
    expires_us = None if truth.expires_at is None else _microseconds(truth.expires_at)
    if (cached.tenant_id, cached.user_id, cached.expires_us) != (
        truth.tenant_id,
        truth.user_id,
        expires_us,
    ):
        return _DROP
    return None


class RepairableCache(Protocol):
    """What reconcile needs of the cache: its entries by batch, and the writes that repair them."""

    async def _all_keys(self, batch: int) -> list[list[str]]: ...

    async def _read_for_reconcile(self, keys: list[str]) -> dict[str, Value]: ...

    async def _bury(self, tombstones: Mapping[str, Value]) -> None: ...

    async def _forget(self, keys: Sequence[str]) -> None: ...

    async def switch_api_tokens(self, enabled: bool) -> None: ...


async def reconcile(
    cache: RepairableCache, sessions: async_sessionmaker[AsyncSession], batch: int
) -> dict[str, int]:
    """Repair every entry that disagrees with PostgreSQL.

    Each batch is read from the cache before PostgreSQL, so a deletion committed meanwhile is
    never undone: its tombstone is written after its commit.
    """
    checked = repaired = 0
    for keys in await cache._all_keys(batch):
        cached = await cache._read_for_reconcile(keys)
        async with sessions() as session:
            truth = await _truth(session, list(cached))
        bury: dict[str, Value] = {}
        drop: list[str] = []
        for key, value in cached.items():
            checked += 1
            verdict = _repair(key, value, truth.get(key))
            if verdict is _DROP:
                drop.append(key)
            elif isinstance(verdict, bool | Principal | _Deleted):
                bury[key] = verdict
        if ENV_KEY in bury:
            await cache.switch_api_tokens(bool(bury.pop(ENV_KEY)))
            repaired += 1
        if bury:
            await cache._bury(bury)
        if drop:
            await cache._forget(drop)
        repaired += len(bury) + len(drop)
    return {"checked": checked, "repaired": repaired}


async def _truth(session: AsyncSession, keys: list[str]) -> dict[str, Value | _Alive]:
    """What PostgreSQL says about each key: absent from the result means "gone"."""
    by_kind: dict[str, list[str]] = {}
    for key in keys:
        kind, _, ident = key.partition(":")
        by_kind.setdefault(kind, []).append(ident)
    truth: dict[str, Value | _Alive] = {}
    if ENV_KEY in by_kind:
        enabled = await session.scalar(_fill_statement(None, ""))
        truth[ENV_KEY] = bool(enabled)
    tables: tuple[tuple[Table, Any, Any], ...] = (
        ("at", AccessToken, AccessToken.id),
        ("cc", ClientCredential, ClientCredential.client_id),
    )
    for table, row, id_column in tables:
        ids = by_kind.get(table)
        if not ids:
            continue
        rows = await session.execute(
            sa.select(id_column, row.tenant_id, row.user_id, row.expires_at)
            .join(Tenant, sa.and_(Tenant.id == row.tenant_id, not_deleted(Tenant)))
            .outerjoin(User, sa.and_(User.id == row.user_id, not_deleted(User)))
            .where(id_column.in_(ids), sa.or_(row.user_id.is_(None), User.id.is_not(None)))
        )
        for ident, tenant_id, user_id, expires_at in rows:
            truth[_token_key(table, ident)] = _Alive(tenant_id, user_id, expires_at)
    principals: tuple[tuple[str, Any], ...] = (("tenant", Tenant), ("user", User))
    for kind, principal in principals:
        ids = by_kind.get(kind)
        if ids:
            found = await session.execute(
                sa.select(principal.id, principal.created_at).where(
                    principal.id.in_(ids), not_deleted(principal)
                )
            )
            for ident, created_at in found:
                truth[f"{kind}:{ident}"] = Principal(incarnation(created_at), alive=True)
    return truth
