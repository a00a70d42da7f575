"""Rate limits on exchanges, counted in Redis (or in-process memory in `m2m dev`)."""

from __future__ import annotations

from typing import Any


class RateLimiter:
    """Placeholder interface; the exchange work fills it in.

    `redis` None means the in-process memory backend (one process only: `m2m dev`).
    """

    def __init__(self, *, redis: Any | None, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
