"""What the vendor's console reads beyond the Frontegg routes: tenants found by name or id, a page
at a time, and the users its token listing names."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.models import Tenant, User

DEFAULT_PAGE = 25
MAX_PAGE = 100
MAX_OFFSET = 2**31 - 1  # what every database takes as an OFFSET
MAX_SEARCH = 255  # a tenant's name and id are no longer
# Ids per statement: far below what one statement may bind on PostgreSQL and SQLite.
IDS_PER_QUERY = 1000


@dataclass(frozen=True)
class TenantPage:
    tenants: list[Tenant]
    total: int  # every tenant that matches, not only this page's


async def find_tenants(session: AsyncSession, search: str, offset: int, limit: int) -> TenantPage:
    """The tenants whose name or id contains `search` (any case; empty matches all), by name,
    `limit` of them from `offset`; a tenant being deleted is gone already."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be from 0 to {MAX_OFFSET}")
    if len(search) > MAX_SEARCH or "\x00" in search:
        raise InvalidInput(f"search must be at most {MAX_SEARCH} characters, without NUL")
    matches: list[sa.ColumnElement[bool]] = [Tenant.deleted_at.is_(None)]
    if search:
        matches.append(
            sa.or_(
                Tenant.name.icontains(search, autoescape=True),
                Tenant.id.icontains(search, autoescape=True),
            )
        )
    total = await session.scalar(sa.select(sa.func.count()).select_from(Tenant).where(*matches))
    tenants = await session.scalars(
        sa.select(Tenant)
        .where(*matches)
        .order_by(sa.func.lower(Tenant.name), Tenant.id)
        .offset(offset)
        .limit(limit)
    )
    return TenantPage(tenants=list(tenants), total=total or 0)


async def users_by_id(session: AsyncSession, user_ids: Collection[str]) -> dict[str, User]:
    """The users named that exist, deleted ones included (a token may name its late creator)."""
    wanted = sorted(set(user_ids))
    found: dict[str, User] = {}
    for start in range(0, len(wanted), IDS_PER_QUERY):
        chunk = wanted[start : start + IDS_PER_QUERY]
        for user in await session.scalars(sa.select(User).where(User.id.in_(chunk))):
            found[user.id] = user
    return found
