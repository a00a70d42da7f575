"""Outbound events (vendor only): endpoints, their secrets, test events, delivery logs."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, patch, post
from litestar.params import QueryParameter

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import PathId, read_body, reads
from api.schemas.events import (
    CreatedEndpointOut,
    DeliveryOut,
    EndpointChangeRequest,
    EndpointOut,
    EndpointRequest,
    EndpointSecretOut,
    EventTypesOut,
    RedeliveryOut,
    SentTestEventOut,
    created_endpoint_response,
    delivery_response,
    endpoint_response,
)
from api.security_headers import CARRIES_SECRET
from api.transaction import commit
from domain import events

ENDPOINTS = "/events/endpoints"
ONE = ENDPOINTS + "/{endpoint_id:str}"
TYPES = "/events/types"


@get(TYPES, dependencies=VENDOR_ONLY)
async def list_event_types(vendor: CallerDep) -> EventTypesOut:
    return EventTypesOut(event_types=list(events.EVENT_TYPES))


@post(
    ENDPOINTS,
    dependencies=VENDOR_ONLY,
    status_code=201,
    opt=reads(EndpointRequest, CARRIES_SECRET),
)
async def create_endpoint(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedEndpointOut:
    """The endpoint with its signing secret: shown here once, never again."""
    data: EndpointRequest = await read_body(request)
    issued = await events.create_endpoint(
        db_session,
        vendor,
        services.master_key,
        url=data.url,
        event_types=data.event_types,
        description=data.description,
        enabled=data.enabled,
        allow_private=services.settings.event_endpoints_allow_private,
        now=now,
    )
    await commit(db_session, services)
    return created_endpoint_response(issued.endpoint, issued.secret)


@get(ENDPOINTS, dependencies=VENDOR_ONLY)
async def list_endpoints(vendor: CallerDep, db_session: SessionDep) -> list[EndpointOut]:
    return [endpoint_response(endpoint) for endpoint in await events.list_endpoints(db_session)]


@get(ONE, dependencies=VENDOR_ONLY)
async def get_endpoint(
    vendor: CallerDep, db_session: SessionDep, endpoint_id: PathId
) -> EndpointOut:
    return endpoint_response(await events.get_endpoint(db_session, endpoint_id))


@patch(ONE, dependencies=VENDOR_ONLY, opt=reads(EndpointChangeRequest))
async def update_endpoint(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    endpoint_id: PathId,
) -> EndpointOut:
    """Change the URL, the event types, the description, or turn it on or off (turning it on
    clears the failures that turned it off)."""
    data: EndpointChangeRequest = await read_body(request)
    endpoint = await events.update_endpoint(
        db_session,
        vendor,
        endpoint_id,
        events.EndpointChange(
            url=data.url,
            event_types=data.event_types,
            description=data.description,
            enabled=data.enabled,
        ),
        allow_private=services.settings.event_endpoints_allow_private,
        now=now,
    )
    response = endpoint_response(endpoint)
    await commit(db_session, services)
    return response


@delete(ONE, dependencies=VENDOR_ONLY, status_code=204)
async def delete_endpoint(
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    endpoint_id: PathId,
) -> None:
    await events.delete_endpoint(db_session, vendor, endpoint_id, now)
    await commit(db_session, services)


@post(ONE + "/secret", dependencies=VENDOR_ONLY, status_code=200, opt=CARRIES_SECRET)
async def rotate_secret(
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    endpoint_id: PathId,
) -> EndpointSecretOut:
    """A new signing secret, shown once; the old one signs nothing from now on."""
    secret = await events.rotate_endpoint_secret(
        db_session, vendor, services.master_key, endpoint_id, now
    )
    await commit(db_session, services)
    return EndpointSecretOut(secret=secret)


@post(ONE + "/test", dependencies=VENDOR_ONLY, status_code=202)
async def send_test_event(
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    endpoint_id: PathId,
) -> SentTestEventOut:
    event_id = await events.send_test_event(db_session, vendor, endpoint_id, now)
    await commit(db_session, services)
    return SentTestEventOut(event_id=event_id)


@get(ONE + "/deliveries", dependencies=VENDOR_ONLY)
async def list_deliveries(
    vendor: CallerDep,
    db_session: SessionDep,
    endpoint_id: PathId,
    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    logs = await events.delivery_log(db_session, endpoint_id, limit)
    return [delivery_response(log) for log in logs]


@post(ONE + "/deliveries/{delivery_id:str}/redeliver", dependencies=VENDOR_ONLY, status_code=202)
async def redeliver(
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    endpoint_id: PathId,
    delivery_id: PathId,
) -> RedeliveryOut:
    delivery = await events.redeliver(db_session, vendor, endpoint_id, delivery_id, now)
    await commit(db_session, services)
    return RedeliveryOut(delivery_id=delivery.id, status="pending")


ROUTES = [
    list_event_types,
    create_endpoint,
    list_endpoints,
    get_endpoint,
    update_endpoint,
    delete_endpoint,
    rotate_secret,
    send_test_event,
    list_deliveries,
    redeliver,
]
