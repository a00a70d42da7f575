"""Every error leaves as JSON, from this one table: the house shape `{"errors": [...],
"message"?}` on every route, and on the OAuth routes also the RFC 6749 / RFC 7009 shape
`{"error", "error_description"}` with its codes. `Retry-After` is set here and nowhere else."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import InterfaceError, OperationalError

from api.schemas.exchange import uses_basic
from domain.db import database_unreachable
from domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from domain.exchange import InvalidGrant, UnsupportedGrantType, UnsupportedTokenType

logger = logging.getLogger("m2m.api")

DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    Unavailable: 503,
}

# The OAuth routes: first match wins, (domain error, status, RFC 6749 / RFC 7009 error code).
OAUTH_CODES: list[tuple[type[DomainError], int, str]] = [
    (UnsupportedTokenType, 400, "unsupported_token_type"),
    (UnsupportedGrantType, 400, "unsupported_grant_type"),
    (InvalidGrant, 400, "invalid_grant"),
    (Unauthenticated, 401, "invalid_client"),
    (RateLimited, 429, "temporarily_unavailable"),
    (Unavailable, 503, "temporarily_unavailable"),
    (Forbidden, 403, "unauthorized_client"),
]
BASIC_CHALLENGE = 'Basic realm="m2m-tokens", charset="UTF-8"'
# Responses that carry (or would have carried) a token are never cached, errors included.
CACHE_CONTROL_NO_STORE = "no-store"


def error_response(
    status: int,
    errors: list[str],
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"errors": errors}
    if message:
        body["message"] = message
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def status_of(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 400


def retry_after_headers(error: Exception) -> dict[str, str]:
    """`Retry-After` for a refusal that says when to come back (429, an overload's 503)."""
    value = getattr(error, "retry_after", None)
    return {"Retry-After": str(value)} if isinstance(value, int) else {}


def handle_domain_error(_: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    return error_response(status_of(error), [error.message], headers=retry_after_headers(error))


def handle_validation_error(_: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    details = [_describe(item) for item in (error.extra if isinstance(error.extra, list) else [])]
    message = "Invalid request" if "Validation failed" in error.detail else error.detail
    return error_response(400, details or [message], message=message)


def _describe(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    message = str(item.get("message", item))
    key = item.get("key")
    return f"{key}: {message}" if key and key not in message else message


def handle_http_exception(_: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    headers = dict(error.headers) if error.headers else None
    return error_response(error.status_code, [error.detail], headers=headers)


def handle_database_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """PostgreSQL cannot answer now (unreachable, restarting, a statement or a lock wait past its
    timeout): 503 with Retry-After, in the shape the route gives any Unavailable (the OAuth
    routes' own, the token routes' uncached one)."""
    logger.error("dependency unavailable on %s %s: %r", request.method, request.url.path, error)
    unavailable = Unavailable()
    handler: Any = handle_domain_error
    route_handler = request.scope.get("route_handler")
    if route_handler is not None:
        handlers = route_handler.resolve_exception_handlers()
        handler = next(
            (handlers[cls] for cls in type(unavailable).__mro__ if cls in handlers), handler
        )
    response: Response[Any] = handler(request, unavailable)
    return response


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if database_unreachable(error):
        return handle_database_error(request, error)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, ["Internal server error"])


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: handle_domain_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_exception,
    OperationalError: handle_database_error,
    InterfaceError: handle_database_error,
    ConnectionError: handle_database_error,
    OSError: handle_database_error,
    Exception: handle_unexpected,
}


# --- the OAuth routes: RFC 6749 / RFC 7009 error bodies --------------------------------------


def _oauth_code(error: DomainError) -> tuple[int, str]:
    for error_type, status, code in OAUTH_CODES:
        if isinstance(error, error_type):
            return status, code
    return status_of(error), "invalid_request"


def _oauth_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    headers: dict[str, str],
) -> Response[Any]:
    """Both shapes in one body, so a Frontegg client and an OAuth library each find theirs."""
    headers = {"Cache-Control": CACHE_CONTROL_NO_STORE, "Pragma": "no-cache", **headers}
    if status == 401 and uses_basic(request):
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    body = {"error": code, "error_description": message, "errors": [message]}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def handle_oauth_domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    status, code = _oauth_code(error)
    return _oauth_response(request, status, code, error.message, retry_after_headers(error))


def handle_oauth_http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    """Litestar's own refusals (a body too large, say) in the OAuth shape."""
    return _oauth_response(request, error.status_code, "invalid_request", error.detail, {})


OAUTH_ERRORS: dict[Any, Any] = {
    DomainError: handle_oauth_domain_error,
    ValidationException: handle_oauth_http_error,
    HTTPException: handle_oauth_http_error,
}
