"""Request and response shapes of the outbound-event routes."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from api.schemas.common import Body, Out, Text, iso
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


class EndpointOut(Out):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    # Why and since when the service turned it off, or since when it is failing.
    disabled_reason: str | None
    failing_since: str | None
    created_at: str
    updated_at: str


class CreatedEndpointOut(EndpointOut):
    secret: str  # its signing secret, shown once


class EndpointSecretOut(Out):
    secret: str


class EventTypesOut(Out):
    event_types: list[str]


class SentTestEventOut(Out):
    event_id: str


class RedeliveryOut(Out):
    delivery_id: str
    status: str


class AttemptOut(Out):
    at: str
    status_code: int | None
    error: str | None
    latency_ms: int


class DeliveryOut(Out):
    id: str
    event_id: str
    event_type: str
    status: str  # pending, delivered or failed
    attempts: int
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: int | None
    attempt_log: list[AttemptOut]


def _endpoint_fields(endpoint: EventEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": iso(endpoint.failing_since),
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


def endpoint_response(endpoint: EventEndpoint) -> EndpointOut:
    return EndpointOut(**_endpoint_fields(endpoint))


def created_endpoint_response(endpoint: EventEndpoint, secret: str) -> CreatedEndpointOut:
    return CreatedEndpointOut(**_endpoint_fields(endpoint), secret=secret)


def delivery_response(log: DeliveryLog) -> DeliveryOut:
    delivery = log.delivery
    return DeliveryOut(
        id=delivery.id,
        event_id=log.event.id,
        event_type=log.event.type,
        status=delivery.status,
        attempts=delivery.attempts,
        created_at=iso(delivery.created_at),
        next_attempt_at=iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        delivered_at=iso(delivery.delivered_at),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        last_latency_ms=delivery.last_latency_ms,
        attempt_log=[
            AttemptOut(
                at=iso(attempt.at),
                status_code=attempt.status_code,
                error=attempt.error,
                latency_ms=attempt.latency_ms,
            )
            for attempt in log.attempts
        ],
    )
