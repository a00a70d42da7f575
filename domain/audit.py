"""Audit events: who did what to which object, and when. Never a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import Caller
from domain.models import AuditEvent


def record(
    session: AsyncSession,
    caller: Caller,
    action: str,
    *,
    target_type: str,
    target_id: str,
    now: datetime,
    tenant_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the caller's transaction; it commits or rolls back with it."""
    session.add(
        AuditEvent(
            at=now,
            actor_type=caller.kind,
            actor_id=caller.user_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            tenant_id=tenant_id,
            details=details or {},
        )
    )
