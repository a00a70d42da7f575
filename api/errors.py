"""Every error leaves as JSON {"errors": [...], "message"?}; domain errors map to a status here."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

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


def handle_domain_error(_: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    retry_after = getattr(error, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return error_response(status_of(error), [error.message], headers=headers)


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
    logger.error("dependency unavailable on %s %s: %r", request.method, request.url.path, error)
    return error_response(HTTP_503_SERVICE_UNAVAILABLE, ["Service temporarily unavailable"])


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
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
