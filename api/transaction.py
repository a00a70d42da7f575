"""The one way a route ends its transaction: commit, then apply what the domain left for after."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.after_commit import AfterCommit


async def commit(
    session: AsyncSession, services: Services, after: AfterCommit | None = None
) -> None:
    """Commit, then write the validity cache and enqueue the jobs `after` names.

    The cache is written before the response: what a request promises (a token invalid now)
    holds on this process when the caller reads the answer, and on every other within the
    cache's propagation bound. A job runs only once the rows it needs are visible.
    """
    await session.commit()
    if after is not None:
        await after.apply(services.validity, services.jobs)
