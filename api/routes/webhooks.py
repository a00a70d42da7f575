"""POST /webhooks/users/deleted: user deletions from the vendor's identity system."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from api.dependencies import ClientAddressDep, NowDep, ServicesDep, SessionDep
from api.schemas.common import reads
from api.schemas.webhooks import UserDeletedEvent
from api.transaction import commit
from domain import webhooks

USER_DELETED = "/webhooks/users/deleted"


@post(USER_DELETED, status_code=204, opt=reads(UserDeletedEvent))
async def user_deleted(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,  # the sender's, for the audit trail
) -> None:
    """2xx once every token of the user is invalid. A replayed webhook-id, an unknown user and
    a user already deleted change nothing and are answered 204 too, so the sender stops."""
    event = webhooks.verify_signature(
        services.settings.webhook_secret, request.headers, await request.body()
    )
    deleted = webhooks.user_deleted_event(event.payload)
    if not await webhooks.first_delivery(db_session, event.webhook_id, now):
        return
    after = await webhooks.delete_user_on_event(db_session, deleted, now)
    await commit(db_session, services, after)


ROUTES = [user_deleted]
