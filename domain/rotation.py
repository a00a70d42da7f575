"""The rotation overlap: how long a replaced client secret or access token keeps working."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput

# The longest overlap any account may ask for.
MAX_OVERLAP = timedelta(days=7)


async def longest_overlap(session: AsyncSession, tenant_id: str) -> timedelta:
    """The longest overlap the tenant's rotations may ask for: the one place an account's token
    policy narrows it. No policy exists yet, so every account gets MAX_OVERLAP."""
    del session, tenant_id  # read by the account policy, once there is one
    return MAX_OVERLAP


async def overlap_end(
    session: AsyncSession, tenant_id: str, overlap_minutes: int, now: datetime
) -> datetime:
    """When the replaced secret or token of a rotation made now stops working; InvalidInput for
    an overlap outside 0 to the tenant's longest."""
    longest_minutes = int((await longest_overlap(session, tenant_id)).total_seconds() // 60)
    if not 0 <= overlap_minutes <= longest_minutes:
        raise InvalidInput(f"overlapMinutes must be from 0 to {longest_minutes}")
    return now + timedelta(minutes=overlap_minutes)
