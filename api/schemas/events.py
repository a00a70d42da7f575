"""Request and response shapes of the outbound-event routes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from api.schemas.common import Body, Text, iso
from domain.events import EVENT_TYPES, MAX_URL_LENGTH, DeliveryLog
from domain.models import EventEndpoint

Url = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        extra_json_schema={"format": "uri", "pattern": "^https?://"},
    ),
]
# The route names unknown types in its refusal; the API reference lists the known ones.
EventType = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(EVENT_TYPES)})]
EventTypes = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES))]


class EndpointRequest(Body):
    url: Url
    event_types: EventTypes
    description: Text | None = None
    enabled: bool = True


class EndpointChangeRequest(Body):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Text | None = None
    enabled: bool | None = None


def endpoint_response(endpoint: EventEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabledReason": endpoint.disabled_reason,
        "failingSince": iso(endpoint.failing_since),
        "createdAt": iso(endpoint.created_at),
        "updatedAt": iso(endpoint.updated_at),
    }


def delivery_response(log: DeliveryLog) -> dict[str, Any]:
    delivery = log.delivery
    return {
        "id": delivery.id,
        "eventId": log.event.id,
        "eventType": log.event.type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "createdAt": iso(delivery.created_at),
        "nextAttemptAt": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "deliveredAt": iso(delivery.delivered_at),
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "lastLatencyMs": delivery.last_latency_ms,
        "attemptLog": [
            {
                "at": iso(attempt.at),
                "statusCode": attempt.status_code,
                "error": attempt.error,
                "latencyMs": attempt.latency_ms,
            }
            for attempt in log.attempts
        ],
    }
