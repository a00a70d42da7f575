"""The one way a route ends its transaction: commit, then apply what the domain left for after."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain import events
from domain.after_commit import AfterCommit
from domain.jobs import DELIVER_EVENTS


async def commit(
    session: AsyncSession, services: Services, after: AfterCommit | None = None
) -> None:
    """Commit, then write the validity cache and enqueue the jobs `after` names.

    The cache is written before the response: what a request promises (a token invalid now)
    holds on this process when the caller reads the answer, and on every other within the
    cache's propagation bound. A job runs only once the rows it needs are visible. Revocations
    go to the feed, and events the transaction announced are sent at once.
    """
    announced = events.take_announced(session)
    await session.commit()
    if announced:
        after = (after or AfterCommit()).enqueue(DELIVER_EVENTS)
    if after is not None:
        await after.apply(services.validity, services.jobs, services.feed)
