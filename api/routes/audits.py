"""The audit trail: the vendor reads every account's, an account admin (fe.secure.read.audits) its
own account's, filtered and a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from api.dependencies import CallerDep, SessionDep
from api.guards import VENDOR_OR_MEMBER
from api.schemas.audits import AuditPageOut, audit_page_response
from domain import audit
from domain.audit import AuditFilter
from domain.errors import InvalidInput

AUDITS = "/audits/v1"

Query = Annotated[str | None, QueryParameter(required=False)]
# What `from` and `to` take, as the API reference says it.
A_TIME = {"format": "date-time"}


def _moment(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time with its offset (`2026-11-30T10:00:00Z`); 400 for anything else."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput(f"{name} must be an ISO 8601 time with its offset, got {value[:64]!r}")
    return moment


@get(AUDITS, dependencies=VENDOR_OR_MEMBER)
async def read_audit_trail(
    caller: CallerDep,
    db_session: SessionDep,
    tenant_id: Annotated[str | None, QueryParameter(name="tenantId", required=False)] = None,
    user_id: Annotated[str | None, QueryParameter(name="userId", required=False)] = None,
    token_id: Annotated[str | None, QueryParameter(name="tokenId", required=False)] = None,
    action: Query = None,
    since: Annotated[
        str | None, QueryParameter(name="from", required=False, schema_extra=A_TIME)
    ] = None,
    until: Annotated[
        str | None, QueryParameter(name="to", required=False, schema_extra=A_TIME)
    ] = None,
    cursor: Query = None,
    limit: Annotated[int, QueryParameter()] = audit.DEFAULT_PAGE,
) -> AuditPageOut:
    """Newest first; `nextCursor` fetches the next page (null on the last)."""
    wanted = AuditFilter(
        tenant_id=tenant_id,
        user_id=user_id,
        token_id=token_id,
        action=action,
        since=_moment("from", since),
        until=_moment("to", until),
    )
    page = await audit.read_trail(db_session, caller, wanted, cursor=cursor, limit=limit)
    return audit_page_response(page)


ROUTES = [read_audit_trail]
