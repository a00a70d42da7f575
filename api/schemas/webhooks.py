"""What the API reference says of the user-deletion webhook's body (the route checks the
signature over the raw bytes, then reads the event itself: domain/webhooks.py)."""

from __future__ import annotations

from typing import Literal

import msgspec

from api.schemas.common import Id


class UserDeletedData(msgspec.Struct, kw_only=True, rename="camel"):
    user_id: Id
    tenant_id: str | None = None


class UserDeletedEvent(msgspec.Struct, kw_only=True):
    """A Standard Webhooks event, signed in the webhook-id, webhook-timestamp and
    webhook-signature headers with M2M_WEBHOOK_SECRET."""

    type: Literal["user.deleted"] = "user.deleted"
    data: UserDeletedData
