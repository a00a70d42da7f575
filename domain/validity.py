"""The validity cache (Redis, or in-process memory) and validate(): is this token valid now?"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class ValidityCache:
    """Placeholder interface; the validation work fills it in.

    `redis` None means the in-process memory backend (one process only: `m2m dev`).
    """

    def __init__(
        self,
        *,
        redis: Any | None,
        sessions: async_sessionmaker[AsyncSession],
        prefix: str,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._prefix = prefix

    async def start(self) -> None:
        """Begin listening for invalidations pushed by other processes."""

    async def close(self) -> None:
        """Stop listening."""
