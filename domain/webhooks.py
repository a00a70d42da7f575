"""Inbound webhooks: Standard Webhooks signatures, and user deletions replay-safe by webhook-id."""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from domain import directory
from domain.after_commit import AfterCommit
from domain.db import upsert_insert
from domain.errors import InvalidInput, NotFound, Unauthenticated
from domain.inputs import refusal
from domain.models import WebhookDelivery

USER_DELETED = "user.deleted"
MAX_ID_LENGTH = 255


class WebhookRejected(Unauthenticated):
    """Missing, malformed or wrong signature, or a timestamp outside the 5-minute tolerance."""


class WebhooksNotConfigured(Unauthenticated):
    def __init__(self) -> None:
        super().__init__("Webhooks are not accepted: M2M_WEBHOOK_SECRET is not set")


@dataclass(frozen=True)
class SignedEvent:
    webhook_id: str
    payload: Any


def verify_signature(secret: str | None, headers: Mapping[str, str], body: bytes) -> SignedEvent:
    """The event, if its `webhook-signature` is an HMAC of `id.timestamp.body` under the secret
    and its `webhook-timestamp` is within 5 minutes of now (the Standard Webhooks rules, checked
    by the reference implementation)."""
    if not secret:
        raise WebhooksNotConfigured()
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
        raise WebhookRejected("Invalid webhook signature") from None
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        # The parser stops at the interpreter's recursion limit, cleanly: this is bad input.
        raise InvalidInput("The event must be a JSON object") from None
    refused = refusal(payload)
    if refused is not None:
        raise InvalidInput(f"The event {refused}")
    webhook_id = headers["webhook-id"]
    if len(webhook_id) > MAX_ID_LENGTH or "\x00" in webhook_id:
        raise InvalidInput("webhook-id is too long")
    return SignedEvent(webhook_id, payload)


@dataclass(frozen=True)
class UserDeleted:
    user_id: str
    tenant_id: str | None


def user_deleted_event(payload: Any) -> UserDeleted:
    """`{"type": "user.deleted", "data": {"userId": "...", "tenantId"?: "..."}}`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise InvalidInput('The event must be {"type": "user.deleted", "data": {"userId": ...}}')
    if payload.get("type", USER_DELETED) != USER_DELETED:
        raise InvalidInput(f"Only {USER_DELETED} events are accepted here")
    data = payload["data"]
    user_id, tenant_id = data.get("userId"), data.get("tenantId")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_ID_LENGTH:
        raise InvalidInput("data.userId must be a non-empty string")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise InvalidInput("data.tenantId must be a string")
    if "\x00" in user_id or (tenant_id is not None and "\x00" in tenant_id):
        raise InvalidInput("Ids must not contain NUL")
    return UserDeleted(user_id, tenant_id)


async def first_delivery(session: AsyncSession, webhook_id: str, now: datetime) -> bool:
    """Record the webhook-id; False if it was received before (a replay: change nothing)."""
    inserted = await session.scalar(
        upsert_insert(session, WebhookDelivery)
        .values(id=webhook_id, received_at=now)
        .on_conflict_do_nothing(index_elements=[WebhookDelivery.id])
        .returning(WebhookDelivery.id)
    )
    return inserted is not None


async def delete_user_on_event(
    session: AsyncSession, event: UserDeleted, now: datetime
) -> AfterCommit:
    """Mark the user deleted as DELETE /users does; nothing to do when there is nothing to
    delete (an unknown user, another tenant's, or one already deleted: the sender's retry is
    answered 2xx)."""
    try:
        return await directory.delete_user(session, None, event.user_id, event.tenant_id, now)
    except NotFound:
        return AfterCommit()
