"""The rotation overlap: how long a replaced client secret or access token keeps working."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.policy import (
    MAX_ROTATION_OVERLAP_MINUTES,
    effective_policy,
    require_rotation_overlap_allowed,
)

# The longest overlap any account may ask for; an account's token policy may narrow it.
MAX_OVERLAP = timedelta(minutes=MAX_ROTATION_OVERLAP_MINUTES)


async def overlap_end(
    session: AsyncSession, tenant_id: str, overlap_minutes: int, now: datetime
) -> datetime:
    """When the replaced secret or token of a rotation made now stops working. InvalidInput for
    an overlap outside 0 to seven days; PolicyViolation (400, naming the rule) for one longer
    than the account's token policy allows."""
    if not 0 <= overlap_minutes <= MAX_ROTATION_OVERLAP_MINUTES:
        raise InvalidInput(f"overlapMinutes must be from 0 to {MAX_ROTATION_OVERLAP_MINUTES}")
    overlap = timedelta(minutes=overlap_minutes)
    require_rotation_overlap_allowed(await effective_policy(session, tenant_id), overlap)
    return now + overlap
