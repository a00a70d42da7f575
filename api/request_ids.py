"""The request id: taken from X-Request-ID when it is sane, made otherwise, echoed on every
answer, and carried by every log line of the request, the access line included."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from typing import Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from domain.logs import RequestOrigin, current_request_id, current_request_origin

HEADER: Final = b"x-request-id"
# One line per answer: client, method, path (never the query string: a client may put a token
# there, whatever the routes accept) and status, also as fields.
access_logger = logging.getLogger("m2m.access")
# What a proxy or a client sends in practice (UUIDs, hex, base64, prefixed ids); anything longer
# or with other characters (control characters end a log line early) is replaced by a new id.
_SANE: Final = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The first X-Request-ID of the request if it is sane, a new id otherwise."""
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SANE.fullmatch(value) else new_request_id()
    return new_request_id()


def with_request_ids(app: ASGIApp) -> ASGIApp:
    """Wraps the whole app (not one route's handler), so that the answers the router gives
    itself (404, 405) and every error answer carry the id too, and each has its access line."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        echoed = (HEADER, request_id.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = current_request_id.set(request_id)
        origin_token = current_request_origin.set(RequestOrigin())
        try:
            await app(scope, receive, send_with_id)
        finally:
            current_request_origin.reset(origin_token)
            _log_access(scope, status)
            current_request_id.reset(token)

    return middleware


def _log_access(scope: HTTPScope, status: int) -> None:
    if not access_logger.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    method, path = scope["method"], scope["path"]
    access_logger.info(
        '%s - "%s %s HTTP/%s" %d',
        address,
        method,
        path,
        scope.get("http_version", "1.1"),
        status,
        extra={"method": method, "path": path, "status": status},
    )
