"""Reconcile: compare every validity-cache entry with PostgreSQL and repair those that disagree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

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
    _microseconds,
    _permanent,
    _token_key,
    incarnation,
)
from domain.validity.fills import (
    _fill_statement,
    generation_began,
    live_owner,
    not_deleted,
)


@dataclass(frozen=True)
class _Alive:
    """A token row that exists in PostgreSQL, with a tenant (and user) not deleted."""

    tenant_id: str
    user_id: str | None
    expires_at: datetime | None


Truth = Value | _Alive | None
# What an entry is: the M2M switch, a live entry (a token's row, a tenant's or user's
# incarnation), or a tombstone.
Cached = Literal["switch", "live", "tombstone"]
# What PostgreSQL says of the thing the entry names: it exists as the entry says; it exists,
# but not as the entry says; or it is gone (for a tenant or user: the incarnation named).
Found = Literal["as cached", "changed", "gone"]
Repair = Literal["keep", "bury", "drop", "switch"]

# The repair rules: a live entry of something deleted becomes a tombstone; any other
# disagreement is dropped, and the next read refills it from PostgreSQL.
REPAIRS: Final[Mapping[tuple[Cached, Found], Repair]] = {
    ("switch", "as cached"): "keep",
    ("switch", "changed"): "switch",  # write the committed value and announce it
    ("live", "as cached"): "keep",
    ("live", "changed"): "drop",  # another tenant, user or expiry (a restore, a manual fix)
    ("live", "gone"): "bury",  # a deletion whose tombstone never landed
    ("tombstone", "changed"): "drop",  # restored behind the cache's back
    ("tombstone", "gone"): "keep",
}


def _cached_state(key: str, cached: Value) -> Cached:
    if key == ENV_KEY:
        return "switch"
    return "tombstone" if _permanent(cached) else "live"


def _found(key: str, cached: Value, truth: Truth) -> Found:
    if key == ENV_KEY:
        return "as cached" if cached == truth else "changed"
    if isinstance(cached, Principal):
        alive = isinstance(truth, Principal) and truth.incarnation == cached.incarnation
        if not alive:
            return "gone"
        return "as cached" if cached.alive else "changed"
    if not isinstance(truth, _Alive):
        return "gone"
    if cached is DELETED:
        return "changed"
    assert isinstance(cached, TokenRow)
    expires_us = None if truth.expires_at is None else _microseconds(truth.expires_at)
    same = (cached.tenant_id, cached.user_id, cached.expires_us) == (
        truth.tenant_id,
        truth.user_id,
        expires_us,
    )
    return "as cached" if same else "changed"


def _repair(key: str, cached: Value, truth: Truth) -> Repair:
    """What to do with one entry, given what PostgreSQL says about the thing it names."""
    return REPAIRS[_cached_state(key, cached), _found(key, cached, truth)]


def _tombstone(cached: Value) -> Value:
    """The tombstone of what a live entry names: the token, or that tenant or user incarnation."""
    if isinstance(cached, Principal):
        return Principal(cached.incarnation, alive=False)
    return DELETED


class RepairableCache(Protocol):
    """What reconcile needs of the cache: its entries by batch, and the writes that repair them."""

    async def _all_keys(self, batch: int) -> list[list[str]]: ...

    async def _read_for_reconcile(self, keys: list[str]) -> dict[str, Value]: ...

    async def _bury(self, tombstones: Mapping[str, Value]) -> None: ...

    async def _forget(self, keys: Sequence[str]) -> None: ...

    async def set_m2m_switch(self, enabled: bool) -> None: ...


async def reconcile(
    cache: RepairableCache, sessions: async_sessionmaker[AsyncSession], batch: int
) -> dict[str, int]:
    """Repair every entry that disagrees with PostgreSQL, by the REPAIRS table.

    Each batch is read from the cache before PostgreSQL, so a deletion committed meanwhile is
    never undone: its tombstone is written after its commit.
    """
    checked = repaired = 0
    for keys in await cache._all_keys(batch):
        cached = await cache._read_for_reconcile(keys)
        async with sessions() as session:
            truth = await _truth(session, list(cached))
        switch: bool | None = None
        bury: dict[str, Value] = {}
        drop: list[str] = []
        for key, value in cached.items():
            checked += 1
            action = _repair(key, value, truth.get(key))
            if action == "switch":
                switch = bool(truth.get(key))
            elif action == "bury":
                bury[key] = _tombstone(value)
            elif action == "drop":
                drop.append(key)
        if switch is not None:
            await cache.set_m2m_switch(switch)
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
        enabled = await session.scalar(_fill_statement(None))
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
            .join(
                Tenant,
                live_owner(Tenant, row),
            )
            .outerjoin(
                User,
                live_owner(User, row),
            )
            .where(id_column.in_(ids), sa.or_(row.user_id.is_(None), User.id.is_not(None)))
        )
        for ident, tenant_id, user_id, expires_at in rows:
            truth[_token_key(table, ident)] = _Alive(tenant_id, user_id, expires_at)
    principals: tuple[tuple[str, Any], ...] = (("tenant", Tenant), ("user", User))
    for kind, principal in principals:
        ids = by_kind.get(kind)
        if ids:
            found = await session.execute(
                sa.select(principal.id, generation_began(principal)).where(
                    principal.id.in_(ids), not_deleted(principal)
                )
            )
            for ident, began in found:
                truth[f"{kind}:{ident}"] = Principal(incarnation(began), alive=True)
    return truth
