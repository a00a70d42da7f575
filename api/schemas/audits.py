"""The audit trail's response shapes: a page of events, each saying who, what, on what, when."""

from __future__ import annotations

from typing import Any

from api.schemas.common import Out, iso
from domain.audit import AuditPage
from domain.models import AuditEvent


class ActorOut(Out):
    type: str  # vendor, user, job, leak_report or system
    id: str | None  # the user's id, the job's name, the leak report's id
    address: str | None  # the client address of the request that acted


class TargetOut(Out):
    type: str
    id: str


class AuditEventOut(Out):
    id: str
    at: str
    action: str
    actor: ActorOut
    target: TargetOut
    tenant_id: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPageOut(Out):
    items: list[AuditEventOut]
    next_cursor: str | None


def _event(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=str(event.id),
        at=iso(event.at),
        action=event.action,
        actor=ActorOut(type=event.actor_type, id=event.actor_id, address=event.actor_address),
        target=TargetOut(type=event.target_type, id=event.target_id),
        tenant_id=event.tenant_id,
        request_id=event.request_id,
        details=event.details,
    )


def audit_page_response(page: AuditPage) -> AuditPageOut:
    return AuditPageOut(
        items=[_event(event) for event in page.events], next_cursor=page.next_cursor
    )
