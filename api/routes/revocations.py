"""GET /revocations/stream: the revocation feed as Server-Sent Events (vendor only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from litestar import get
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.dependencies import CallerDep, ServicesDep
from api.guards import VENDOR_ONLY
from domain.revocations import RevocationFeed, StreamId, parse_last_event_id

STREAM = "/revocations/stream"
# What an EventSource waits before reconnecting, in milliseconds.
RECONNECT_MS = 1000


@get(STREAM, dependencies=VENDOR_ONLY, media_type="text/event-stream")
async def revocation_stream(
    vendor: CallerDep,
    services: ServicesDep,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="last-event-id",
            required=False,
            max_length=64,
            schema_extra={"pattern": r"^\d{1,20}-\d{1,20}$"},
        ),
    ] = None,
) -> ServerSentEvent:
    """Revocations as they are committed, from the entry after Last-Event-ID (a `resync`
    event first when that is older than the feed keeps), each as event `revocation` whose id
    resumes the stream; a comment every 15 s keeps idle connections open."""
    resync, start = await services.feed.start(parse_last_event_id(last_event_id))
    return ServerSentEvent(
        _messages(services.feed, start, resync.reason if resync else None),
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def _messages(
    feed: RevocationFeed, start: StreamId, resync: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    yield ServerSentEventMessage(data=None, comment="m2m revocation feed", retry=RECONNECT_MS)
    if resync is not None:
        yield ServerSentEventMessage(
            event="resync", data=json.dumps({"reason": resync}), id=f"{start[0]}-{start[1]}"
        )
    async for entry in feed.follow(start):
        if entry is None:
            yield ServerSentEventMessage(data=None, comment="keep-alive")
        else:
            yield ServerSentEventMessage(
                event="revocation", data=json.dumps(entry.data, separators=(",", ":")), id=entry.id
            )


ROUTES = [revocation_stream]
