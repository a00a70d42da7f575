"""Audit events: who did what to which object, and when. Never a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import Caller
from domain.models import AuditEvent


def record(
    session: AsyncSession,
    caller: Caller | None,
    action: str,
    *,
    target_type: str,
    target_id: str,
    now: datetime,
    tenant_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the caller's transaction; it commits or rolls back with it.

    `caller` None is the service itself (reuse detection, background jobs).
    """
    session.add(
        AuditEvent(
            at=now,
            actor_type=caller.kind if caller is not None else "system",
            actor_id=caller.user_id if caller is not None else None,
            action=action,
            target_type=target_type,
            target_id=target_id,
            tenant_id=tenant_id,
            details=details or {},
        )
    )
