"""The one clock: every `now` in the service comes from here, so freezegun controls it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
