"""Outbound events: the catalogue, the outbox, the vendor's endpoints, and signed delivery.

A change announces its event with `announce(session, type, data, now)`, which adds a row to the
outbox in the caller's transaction: the event exists exactly when the change committed. The
delivery job (`deliver_events`) then makes one delivery per endpoint subscribed to the event's
type and sends each, signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
`webhook-signature`: HMAC-SHA256 of `id.timestamp.body` under the endpoint's secret), at least
once: a delivery is leased before it is sent and marked when it was, so a worker killed in
between leaves it due again. Failures are retried with exponential backoff for up to a day; an
endpoint failing for longer than the configured time is turned off.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from domain import audit
from domain.auth import Caller
from domain.db import upsert_insert
from domain.errors import InvalidInput, NotFound
from domain.models import EventDelivery, EventDeliveryAttempt, EventEndpoint, OutboundEvent

if TYPE_CHECKING:
    from domain.keys import MasterKey
    from domain.settings import Settings

logger = logging.getLogger("m2m.events")

# --- the catalogue ------------------------------------------------------------------------------

TOKEN_CREATED: Final = "token.created"
TOKEN_DELETED: Final = "token.deleted"
TOKEN_ROTATED: Final = "token.rotated"
TOKEN_LEAKED: Final = "token.leaked"
TOKEN_EXPIRING: Final = "token.expiring"
TOKEN_EXPIRED: Final = "token.expired"
TOKEN_UNUSED_WARNING: Final = "token.unused_warning"
REFRESH_TOKEN_REUSE_DETECTED: Final = "refresh_token.reuse_detected"
TOKENS_REVOKED: Final = "tokens.revoked"
M2M_SWITCHED: Final = "m2m.switched"
KEY_ROTATED: Final = "key.rotated"
TEST: Final = "test"

EVENT_TYPES: Final = (
    TOKEN_CREATED,
    TOKEN_DELETED,
    TOKEN_ROTATED,
    TOKEN_LEAKED,
    TOKEN_EXPIRING,
    TOKEN_EXPIRED,
    TOKEN_UNUSED_WARNING,
    REFRESH_TOKEN_REUSE_DETECTED,
    TOKENS_REVOKED,
    M2M_SWITCHED,
    KEY_ROTATED,
    TEST,
)

# --- delivery rules -----------------------------------------------------------------------------

# A slow endpoint is given up on quickly: a worker sends many deliveries at once, and none of
# them waits on one endpoint longer than this.
CONNECT_TIMEOUT_SECONDS: Final = 3.0
READ_TIMEOUT_SECONDS: Final = 5.0
DELIVERY_TIMEOUT_SECONDS: Final = 10.0
# A claimed delivery is due again after this (its worker died): above any one send's bound.
LEASE: Final = timedelta(seconds=30)
FIRST_RETRY: Final = timedelta(seconds=5)
MAX_RETRY_INTERVAL: Final = timedelta(hours=6)
RETRY_FOR: Final = timedelta(days=1)
SENDS_AT_ONCE: Final = 10
CLAIM_BATCH: Final = 100
MAX_URL_LENGTH: Final = 2048
MAX_ENDPOINTS: Final = 50
MAX_ERROR_LENGTH: Final = 300
SECRET_PREFIX: Final = "whsec_"
ANNOUNCED: Final = "m2m.events.announced"


@dataclass(frozen=True)
class DeliveryPolicy:
    """What the delivery job needs beyond the database: the key that opens the endpoints'
    secrets, whether private addresses are allowed, and when a failing endpoint is turned off."""

    master_key: MasterKey | None = None
    allow_private: bool = False
    disable_after: timedelta = timedelta(days=5)
    expiry_warning_days: tuple[int, ...] = (30, 7, 1)

    @classmethod
    def from_settings(cls, settings: Settings, master_key: MasterKey | None) -> DeliveryPolicy:
        return cls(
            master_key=master_key,
            allow_private=settings.event_endpoints_allow_private,
            disable_after=timedelta(seconds=settings.event_endpoint_disable_after_seconds),
            expiry_warning_days=settings.expiry_warning_days,
        )


# --- announcing -----------------------------------------------------------------------------------


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def announce(session: AsyncSession, event_type: str, data: dict[str, Any], now: datetime) -> str:
    """Add an event to the outbox in the caller's transaction: it is delivered if and only if
    that transaction commits. Returns the event id (the `webhook-id` receivers see)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    event_id = new_event_id()
    session.add(
        OutboundEvent(id=event_id, type=event_type, occurred_at=now, data=data, once_key=None)
    )
    session.info[ANNOUNCED] = True
    return event_id


async def announce_once(
    session: AsyncSession, event_type: str, data: dict[str, Any], now: datetime, once_key: str
) -> bool:
    """As announce, unless an event with `once_key` was announced before (then nothing)."""
    inserted = await session.scalar(
        upsert_insert(session, OutboundEvent)
        .values(
            id=new_event_id(),
            type=event_type,
            occurred_at=now,
            data=data,
            once_key=once_key,
            dispatched_at=None,
        )
        .on_conflict_do_nothing(index_elements=[OutboundEvent.once_key])
        .returning(OutboundEvent.id)
    )
    return inserted is not None


def take_announced(session: AsyncSession) -> bool:
    """Whether the session announced events since the last call: its committer then asks for a
    delivery run at once rather than waiting for the periodic one."""
    return bool(session.info.pop(ANNOUNCED, False))


def event_payload(event: OutboundEvent) -> dict[str, Any]:
    """The JSON body receivers get: `{id, type, timestamp, data}`."""
    return {
        "id": event.id,
        "type": event.type,
        "timestamp": event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{event.occurred_at.microsecond // 1000:03d}Z",
        "data": event.data,
    }


# --- endpoints ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: EventEndpoint
    secret: str = field(repr=False)


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def _seal(master: MasterKey, endpoint_id: str, secret: str) -> bytes:
    return master.encrypt(secret.encode(), f"event-endpoint:{endpoint_id}".encode())


def _open(master: MasterKey, endpoint: EventEndpoint) -> str:
    return master.decrypt(
        endpoint.secret_encrypted, f"event-endpoint:{endpoint.id}".encode()
    ).decode()


def check_event_types(event_types: Sequence[str]) -> list[str]:
    if not event_types:
        raise InvalidInput("eventTypes must name at least one event type")
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"Unknown event types: {', '.join(unknown)}")
    return sorted(set(event_types))


def _forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_endpoint_url(url: str, allow_private: bool) -> str:
    """An http(s) URL without credentials whose host resolves only to public addresses
    (loopback, private, link-local and other non-global ranges are refused: server-side
    request forgery), unless `allow_private`."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("url has an invalid port") from None
    if allow_private:
        return url
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except OSError:
        raise InvalidInput(f"url's host {parts.hostname} does not resolve") from None
    if any(_forbidden_address(str(info[4][0])) for info in found):
        raise InvalidInput(
            "url resolves to a loopback, private or link-local address; endpoints must be public"
        )
    return url


async def create_endpoint(
    session: AsyncSession,
    caller: Caller,
    master: MasterKey,
    *,
    url: str,
    event_types: Sequence[str],
    description: str | None,
    enabled: bool,
    allow_private: bool,
    now: datetime,
) -> IssuedEndpoint:
    types = check_event_types(event_types)
    await check_endpoint_url(url, allow_private)
    count = await session.scalar(sa.select(sa.func.count()).select_from(EventEndpoint))
    if (count or 0) >= MAX_ENDPOINTS:
        raise InvalidInput(f"At most {MAX_ENDPOINTS} event endpoints may be registered")
    endpoint_id = str(uuid.uuid4())
    secret = _new_secret()
    endpoint = EventEndpoint(
        id=endpoint_id,
        url=url,
        description=description,
        event_types=types,
        enabled=enabled,
        secret_encrypted=_seal(master, endpoint_id, secret),
        created_at=now,
        updated_at=now,
        disabled_reason=None,
        failing_since=None,
    )
    session.add(endpoint)
    _record(session, caller, "event_endpoint.created", endpoint_id, now, url=url, eventTypes=types)
    await session.flush()
    return IssuedEndpoint(endpoint, secret)


async def reencrypt_endpoint_secrets(
    session: AsyncSession, current: MasterKey, new: MasterKey
) -> int:
    """Seal every endpoint's signing secret with `new` (beside the signing keys, when the master
    key changes); every one is opened before any is written. The number of secrets."""
    endpoints = list(
        await session.scalars(sa.select(EventEndpoint).order_by(EventEndpoint.id).with_for_update())
    )
    secrets = [_open(current, endpoint) for endpoint in endpoints]
    for endpoint, secret in zip(endpoints, secrets, strict=True):
        endpoint.secret_encrypted = _seal(new, endpoint.id, secret)
    await session.flush()
    return len(endpoints)


async def list_endpoints(session: AsyncSession) -> list[EventEndpoint]:
    return list(
        await session.scalars(
            sa.select(EventEndpoint).order_by(EventEndpoint.created_at, EventEndpoint.id)
        )
    )


async def get_endpoint(session: AsyncSession, endpoint_id: str) -> EventEndpoint:
    endpoint = await session.get(EventEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"Event endpoint {endpoint_id} not found")
    return endpoint


@dataclass(frozen=True)
class EndpointChange:
    """A PATCH of an endpoint; None leaves a field as it is."""

    url: str | None = None
    event_types: Sequence[str] | None = None
    description: str | None = None
    enabled: bool | None = None


async def update_endpoint(
    session: AsyncSession,
    caller: Caller,
    endpoint_id: str,
    change: EndpointChange,
    *,
    allow_private: bool,
    now: datetime,
) -> EventEndpoint:
    endpoint = await get_endpoint(session, endpoint_id)
    changed: list[str] = []
    if change.url is not None and change.url != endpoint.url:
        endpoint.url = await check_endpoint_url(change.url, allow_private)
        changed.append("url")
    if change.event_types is not None:
        types = check_event_types(change.event_types)
        if types != endpoint.event_types:
            endpoint.event_types = types
            changed.append("eventTypes")
    if change.description is not None and change.description != endpoint.description:
        endpoint.description = change.description
        changed.append("description")
    if change.enabled is not None and change.enabled != endpoint.enabled:
        endpoint.enabled = change.enabled
        changed.append("enabled")
    if change.enabled:
        # Turned on (again): its failures so far no longer count toward turning it off.
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    if changed:
        endpoint.updated_at = now
        _record(session, caller, "event_endpoint.updated", endpoint_id, now, changed=changed)
    await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, caller: Caller, endpoint_id: str, now: datetime
) -> None:
    deleted = await session.scalar(
        sa.delete(EventEndpoint).where(EventEndpoint.id == endpoint_id).returning(EventEndpoint.id)
    )
    if deleted is None:
        raise NotFound(f"Event endpoint {endpoint_id} not found")
    _record(session, caller, "event_endpoint.deleted", endpoint_id, now)
    await session.flush()


async def rotate_endpoint_secret(
    session: AsyncSession, caller: Caller, master: MasterKey, endpoint_id: str, now: datetime
) -> str:
    """A new signing secret, returned this once; deliveries from now on are signed with it."""
    endpoint = await get_endpoint(session, endpoint_id)
    secret = _new_secret()
    endpoint.secret_encrypted = _seal(master, endpoint.id, secret)
    endpoint.updated_at = now
    _record(session, caller, "event_endpoint.secret_rotated", endpoint_id, now)
    await session.flush()
    return secret


async def send_test_event(
    session: AsyncSession, caller: Caller | None, endpoint_id: str, now: datetime
) -> str:
    """A `test` event to this endpoint alone (subscribed to it or not)."""
    endpoint = await get_endpoint(session, endpoint_id)
    event_id = new_event_id()
    session.add(
        OutboundEvent(
            id=event_id,
            type=TEST,
            occurred_at=now,
            data={"endpointId": endpoint.id},
            once_key=None,
            dispatched_at=now,
        )
    )
    await session.flush()
    session.add(_delivery(event_id, endpoint.id, now))
    session.info[ANNOUNCED] = True
    _record(session, caller, "event_endpoint.tested", endpoint_id, now, eventId=event_id)
    await session.flush()
    return event_id


@dataclass(frozen=True)
class DeliveryLog:
    delivery: EventDelivery
    event: OutboundEvent
    attempts: list[EventDeliveryAttempt]


async def delivery_log(
    session: AsyncSession, endpoint_id: str, limit: int = 100
) -> list[DeliveryLog]:
    """The endpoint's deliveries, newest first, each with its event and its attempts."""
    await get_endpoint(session, endpoint_id)
    rows = (
        await session.execute(
            sa.select(EventDelivery, OutboundEvent)
            .join(OutboundEvent, OutboundEvent.id == EventDelivery.event_id)
            .where(EventDelivery.endpoint_id == endpoint_id)
            .order_by(EventDelivery.created_at.desc(), EventDelivery.id)
            .limit(limit)
        )
    ).all()
    ids = [delivery.id for delivery, _ in rows]
    attempts: dict[str, list[EventDeliveryAttempt]] = {}
    if ids:
        for attempt in await session.scalars(
            sa.select(EventDeliveryAttempt)
            .where(EventDeliveryAttempt.delivery_id.in_(ids))
            .order_by(EventDeliveryAttempt.id)
        ):
            attempts.setdefault(attempt.delivery_id, []).append(attempt)
    return [DeliveryLog(d, e, attempts.get(d.id, [])) for d, e in rows]


async def redeliver(
    session: AsyncSession, caller: Caller, endpoint_id: str, delivery_id: str, now: datetime
) -> EventDelivery:
    """Send a delivery again now, whatever became of it (delivered, given up or pending)."""
    delivery = await session.scalar(
        sa.select(EventDelivery)
        .where(EventDelivery.id == delivery_id, EventDelivery.endpoint_id == endpoint_id)
        .with_for_update()
    )
    if delivery is None:
        raise NotFound(f"Delivery {delivery_id} not found")
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.created_at = now  # a manual redelivery gets a fresh day of retries
    session.info[ANNOUNCED] = True
    _record(session, caller, "event_delivery.redelivered", endpoint_id, now, deliveryId=delivery_id)
    await session.flush()
    return delivery


def _record(
    session: AsyncSession,
    caller: Caller | None,
    action: str,
    endpoint_id: str,
    now: datetime,
    **details: Any,
) -> None:
    audit.record(
        session,
        caller,
        action,
        target_type="event_endpoint",
        target_id=endpoint_id,
        now=now,
        details=details,
    )


def _delivery(event_id: str, endpoint_id: str, now: datetime) -> EventDelivery:
    return EventDelivery(
        id=str(uuid.uuid4()),
        event_id=event_id,
        endpoint_id=endpoint_id,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        delivered_at=None,
        last_status_code=None,
        last_error=None,
        last_latency_ms=None,
    )


# --- delivering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Send:
    delivery_id: str
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    body: bytes


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    latency_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_interval(attempts: int) -> timedelta:
    """After the n-th failed attempt: 5 s, 20 s, 80 s, ... (x4 each time), at most 6 hours."""
    interval: timedelta = min(FIRST_RETRY * 4 ** max(attempts - 1, 0), MAX_RETRY_INTERVAL)
    return interval


async def dispatch_events(
    sessions: async_sessionmaker[AsyncSession], now: datetime, batch: int = 1000
) -> int:
    """Make the deliveries of announced events: one per enabled endpoint subscribed to the
    type, in the transaction that marks the event dispatched. Returns the events dispatched."""
    total = 0
    while True:
        async with sessions() as session, session.begin():
            events = list(
                await session.execute(
                    sa.select(OutboundEvent.id, OutboundEvent.type)
                    .where(OutboundEvent.dispatched_at.is_(None))
                    .order_by(OutboundEvent.occurred_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not events:
                return total
            endpoints = list(
                await session.execute(
                    sa.select(EventEndpoint.id, EventEndpoint.event_types).where(
                        EventEndpoint.enabled
                    )
                )
            )
            for event_id, event_type in events:
                for endpoint_id, types in endpoints:
                    if event_type in types:
                        session.add(_delivery(event_id, endpoint_id, now))
            await session.execute(
                sa.update(OutboundEvent)
                .where(OutboundEvent.id.in_([event_id for event_id, _ in events]))
                .values(dispatched_at=now)
            )
        total += len(events)
        if len(events) < batch:
            return total


async def _claim(
    sessions: async_sessionmaker[AsyncSession], policy: DeliveryPolicy, now: datetime
) -> list[_Send]:
    """Lease up to CLAIM_BATCH due deliveries of enabled endpoints (SKIP LOCKED: a concurrent
    run takes others) by moving them LEASE ahead, and commit that before sending anything."""
    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                sa.select(EventDelivery.id, EventDelivery.event_id, EventDelivery.endpoint_id)
                .join(EventEndpoint, EventEndpoint.id == EventDelivery.endpoint_id)
                .where(
                    EventDelivery.status == "pending",
                    EventDelivery.next_attempt_at <= now,
                    EventEndpoint.enabled,
                )
                .order_by(EventDelivery.next_attempt_at)
                .limit(CLAIM_BATCH)
                .with_for_update(of=EventDelivery, skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        if policy.master_key is None:
            # Left as they are (nothing leased): a worker given the key sends them.
            raise RuntimeError("M2M_MASTER_KEY is needed to sign outbound events")
        master_key = policy.master_key
        await session.execute(
            sa.update(EventDelivery)
            .where(EventDelivery.id.in_([row.id for row in rows]))
            .values(next_attempt_at=now + LEASE)
        )
        events = {
            event.id: event
            for event in await session.scalars(
                sa.select(OutboundEvent).where(OutboundEvent.id.in_({row.event_id for row in rows}))
            )
        }
        endpoints = {
            endpoint.id: endpoint
            for endpoint in await session.scalars(
                sa.select(EventEndpoint).where(
                    EventEndpoint.id.in_({row.endpoint_id for row in rows})
                )
            )
        }
        return [
            _Send(
                delivery_id=row.id,
                endpoint_id=row.endpoint_id,
                url=endpoints[row.endpoint_id].url,
                secret=_open(master_key, endpoints[row.endpoint_id]),
                event_id=row.event_id,
                body=json.dumps(
                    event_payload(events[row.event_id]), separators=(",", ":")
                ).encode(),
            )
            for row in rows
        ]


def signed_headers(secret: str, event_id: str, sent_at: datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers, signed by the reference implementation."""
    signature = Webhook(secret).sign(event_id, sent_at, body.decode())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "m2m-tokens-webhooks",
    }


async def _send(
    client: httpx.AsyncClient, send: _Send, policy: DeliveryPolicy, now: datetime
) -> _Outcome:
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        # Checked at each send too: a name may resolve elsewhere than when it was registered.
        await check_endpoint_url(send.url, policy.allow_private)
        async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
            response = await client.post(
                send.url,
                content=send.body,
                headers=signed_headers(send.secret, send.event_id, now, send.body),
            )
    except InvalidInput as refused:
        return _Outcome(None, str(refused)[:MAX_ERROR_LENGTH], took())
    except TimeoutError:
        return _Outcome(None, "timed out", took())
    except httpx.HTTPError as error:
        return _Outcome(None, f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH], took())
    return _Outcome(response.status_code, None, took())


async def _record_outcome(
    sessions: async_sessionmaker[AsyncSession],
    send: _Send,
    outcome: _Outcome,
    policy: DeliveryPolicy,
    now: datetime,
) -> None:
    async with sessions() as session, session.begin():
        delivery = await session.get(EventDelivery, send.delivery_id, with_for_update=True)
        if delivery is None:  # its endpoint was deleted meanwhile
            return
        delivery.attempts += 1
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        delivery.last_latency_ms = outcome.latency_ms
        session.add(
            EventDeliveryAttempt(
                delivery_id=delivery.id,
                at=now,
                status_code=outcome.status_code,
                error=outcome.error,
                latency_ms=outcome.latency_ms,
            )
        )
        endpoint = await session.get(EventEndpoint, send.endpoint_id, with_for_update=True)
        if outcome.delivered:
            delivery.status = "delivered"
            delivery.delivered_at = now
            if endpoint is not None:
                endpoint.failing_since = None
            return
        retry_at = now + retry_interval(delivery.attempts)
        if retry_at > delivery.created_at + RETRY_FOR:
            delivery.status = "failed"
        else:
            delivery.next_attempt_at = retry_at
        if endpoint is None:
            return
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        elif endpoint.enabled and now - endpoint.failing_since >= policy.disable_after:
            endpoint.enabled = False
            endpoint.disabled_reason = (
                f"failing since {endpoint.failing_since.isoformat()}: turned off by the service"
            )
            endpoint.updated_at = now
            _record(session, None, "event_endpoint.disabled", endpoint.id, now)
            logger.warning("event endpoint %s failed too long and was turned off", endpoint.id)


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    policy: DeliveryPolicy,
    clock: Callable[[], datetime],
    *,
    max_batches: int = 20,
) -> dict[str, int]:
    """Dispatch the announced events, then send the due deliveries, SENDS_AT_ONCE at a time;
    each outcome is committed as it arrives."""
    counts = {"events": 0, "delivered": 0, "failed_attempts": 0}
    counts["events"] = await dispatch_events(sessions, clock())
    limits = httpx.Timeout(
        DELIVERY_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS
    )
    gate = asyncio.Semaphore(SENDS_AT_ONCE)
    async with httpx.AsyncClient(timeout=limits, follow_redirects=False, trust_env=False) as client:

        async def one(send: _Send) -> None:
            async with gate:
                outcome = await _send(client, send, policy, clock())
                await _record_outcome(sessions, send, outcome, policy, clock())
            counts["delivered" if outcome.delivered else "failed_attempts"] += 1

        for _ in range(max_batches):
            sends = await _claim(sessions, policy, clock())
            if not sends:
                break
            # Every send finishes (and records its outcome) before a failure ends the run.
            outcomes = await asyncio.gather(*(one(send) for send in sends), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
    return counts
