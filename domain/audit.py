"""Audit events: who did what to which object, when, from where; writing them, reading the trail
a page at a time, and pruning it. Never a secret."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import Caller
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.logs import current_job, current_request_id, current_request_origin
from domain.models import AuditEvent

# Who may act, as the trail names them: the vendor, an end user (actor id: the user), a
# background job (actor id: the job's name), a leak report (actor id: the report), and the
# service itself on a request nobody authenticated as (refresh-token reuse detection, the
# identity provider's user-deletion webhook).
VENDOR: Final = "vendor"
USER: Final = "user"
JOB: Final = "job"
LEAK_REPORT: Final = "leak_report"
SYSTEM: Final = "system"

# The permission an account admin needs to read its account's trail (the vendor reads all).
READ_AUDITS: Final = "fe.secure.read.audits"

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
MAX_FILTER: Final = 255
MAX_ADDRESS: Final = 64


@dataclass(frozen=True)
class Actor:
    """Who acted when it is not an authenticated caller (a leak report, say)."""

    type: str
    id: str | None = None


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
    actor: Actor | None = None,
) -> None:
    """Add an audit event to the caller's transaction; it commits or rolls back with it.

    `caller` None is the service itself: the job running now (domain.job_runs sets it), `actor`
    when given, or the system. The request's client address and id are taken from the request
    being answered (domain/logs.py), so no writer has to pass them.
    """
    actor_type: str
    if caller is not None:
        actor_type, actor_id = caller.kind, caller.user_id
    elif actor is not None:
        actor_type, actor_id = actor.type, actor.id
    elif (job := current_job.get()) is not None:
        actor_type, actor_id = JOB, job
    else:
        actor_type, actor_id = SYSTEM, None
    origin = current_request_origin.get()
    address = origin.address if origin is not None else None
    session.add(
        AuditEvent(
            at=now,
            actor_type=actor_type,
            actor_id=actor_id,
            actor_address=address[:MAX_ADDRESS] if address is not None else None,
            request_id=current_request_id.get(),
            action=action,
            target_type=target_type,
            target_id=target_id,
            tenant_id=tenant_id,
            details=details or {},
        )
    )


# --- reading the trail ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What a reader asks for; None leaves a field unfiltered. `tenant_id` is forced to the
    caller's own account for an end user."""

    tenant_id: str | None = None
    user_id: str | None = None  # who acted, or whom it was about
    token_id: str | None = None  # an access token's id or a credential's clientId
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None  # None: this is the last page


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    """The id the previous page ended at; 400 for anything this service did not hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "a1" or not number.isdigit() or len(number) > 19:
            raise ValueError(cursor)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this service handed out") from None


def _checked(name: str, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > MAX_FILTER or "\x00" in value):
        raise InvalidInput(f"{name} must be 1 to {MAX_FILTER} characters, without NUL")
    return value


async def read_trail(
    session: AsyncSession,
    caller: Caller,
    wanted: AuditFilter,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> AuditPage:
    """The events matching `wanted`, newest first (by id, the order they were written), `limit`
    of them after `cursor`. The vendor reads every account's and the environment's own; an end
    user with READ_AUDITS reads only its own account's, whatever tenant it names."""
    caller.require(READ_AUDITS)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")
    for name, value in (
        ("tenantId", wanted.tenant_id),
        ("userId", wanted.user_id),
        ("tokenId", wanted.token_id),
        ("action", wanted.action),
    ):
        _checked(name, value)
    if wanted.since is not None and wanted.until is not None and wanted.since >= wanted.until:
        raise InvalidInput("from must be before to")
    tenant_id = wanted.tenant_id
    if not caller.is_vendor:
        if caller.tenant_id is None:
            raise Forbidden("An end user reads only its own account's audit trail")
        # Another account's trail is unknown to an end user, as its tokens are.
        if tenant_id is not None and tenant_id != caller.tenant_id:
            raise NotFound(f"Tenant {tenant_id} not found")
        tenant_id = caller.tenant_id
    where: list[sa.ColumnElement[bool]] = []
    if tenant_id is not None:
        where.append(AuditEvent.tenant_id == tenant_id)
    if wanted.user_id is not None:
        where.append(
            sa.or_(
                sa.and_(AuditEvent.actor_type == USER, AuditEvent.actor_id == wanted.user_id),
                sa.and_(AuditEvent.target_type == "user", AuditEvent.target_id == wanted.user_id),
                AuditEvent.details["userId"].as_string() == wanted.user_id,
            )
        )
    if wanted.token_id is not None:
        where.append(
            sa.or_(
                sa.and_(
                    AuditEvent.target_type.in_(("access_token", "client_credential")),
                    AuditEvent.target_id == wanted.token_id,
                ),
                AuditEvent.details["clientId"].as_string() == wanted.token_id,
            )
        )
    if wanted.action is not None:
        where.append(AuditEvent.action == wanted.action)
    if wanted.since is not None:
        where.append(AuditEvent.at >= wanted.since)
    if wanted.until is not None:
        where.append(AuditEvent.at < wanted.until)
    if cursor is not None:
        where.append(AuditEvent.id < _decode_cursor(cursor))
    events = list(
        await session.scalars(
            sa.select(AuditEvent).where(*where).order_by(AuditEvent.id.desc()).limit(limit + 1)
        )
    )
    more = len(events) > limit
    events = events[:limit]
    return AuditPage(
        events=events, next_cursor=_encode_cursor(events[-1].id) if more and events else None
    )


# --- retention --------------------------------------------------------------------------------


def prune_before(now: datetime, retention: timedelta) -> sa.Select[Any]:
    """The events older than the retention, oldest first: what the pruning job claims."""
    return sa.select(AuditEvent.id).where(AuditEvent.at < now - retention).order_by(AuditEvent.id)
