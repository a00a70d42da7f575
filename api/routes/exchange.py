"""Client-credential exchange and refresh: Frontegg's api-token routes, and OAuth 2.0's
/oauth/token (RFC 6749) and /oauth/revoke (RFC 7009)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from litestar import MediaType, Request, Response, post
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.ext.asyncio import AsyncSession

from api.dependencies import NowDep, ServicesDep, SessionDep
from api.errors import handle_domain_error, status_of
from api.metrics import count_as
from api.schemas.common import read_body
from api.schemas.exchange import (
    ExchangeRequest,
    LegacyTokenPairOut,
    OAuthTokenOut,
    RefreshRequest,
    TokenPairOut,
    client_secret_of,
    legacy_token_pair_response,
    oauth_token_response,
    read_form,
    token_pair_response,
    uses_basic,
)
from api.state import Services
from domain import exchange
from domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from domain.exchange import ClientSecret, InvalidClient, InvalidGrant, TokenPair
from domain.jobs import PRUNE_REFRESH_TOKENS

EXCHANGE_V2 = "/identity/resources/auth/v2/api-token"
EXCHANGE_V1 = "/identity/resources/auth/v1/api-token"
REFRESH_V2 = "/identity/resources/auth/v2/api-token/token/refresh"
OAUTH_TOKEN = "/oauth/token"
OAUTH_REVOKE = "/oauth/revoke"

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
MAX_GRANT_TYPE = 64
BASIC_CHALLENGE = 'Basic realm="m2m-tokens", charset="UTF-8"'


# RFC 6749 section 5.1: token responses are never cached.
NO_STORE = CacheControlHeader(no_store=True)
PRAGMA_NO_CACHE = [ResponseHeader(name="Pragma", value="no-cache")]


class UnsupportedGrantType(InvalidInput):
    """A grant_type this server does not offer."""


# --- errors: SPEC section 8 everywhere, plus RFC 6749 section 5.2 on /oauth ------------------


def _retry_after(error: Exception) -> int | None:
    value = getattr(error, "retry_after", None)
    return value if isinstance(value, int) else None


def frontegg_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    """The house error body, never cached, with Retry-After on 429 and on an overload's 503."""
    response = handle_domain_error(request, error)
    response.headers["Cache-Control"] = NO_STORE.to_header()
    retry_after = _retry_after(error)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


# First match wins: (domain error, status, RFC 6749 / RFC 7009 error code).
OAUTH_CODES: list[tuple[type[DomainError], int, str]] = [
    (exchange.UnsupportedTokenType, 400, "unsupported_token_type"),
    (UnsupportedGrantType, 400, "unsupported_grant_type"),
    (InvalidGrant, 400, "invalid_grant"),
    (Unauthenticated, 401, "invalid_client"),
    (RateLimited, 429, "temporarily_unavailable"),
    (Unavailable, 503, "temporarily_unavailable"),
    (Forbidden, 403, "unauthorized_client"),
]


def _oauth_code(error: DomainError) -> tuple[int, str]:
    for error_type, status, code in OAUTH_CODES:
        if isinstance(error, error_type):
            return status, code
    return status_of(error), "invalid_request"


def _oauth_response(
    request: Request[Any, Any, Any], status: int, code: str, message: str, retry_after: int | None
) -> Response[Any]:
    headers = {"Cache-Control": NO_STORE.to_header(), "Pragma": "no-cache"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status == 401 and uses_basic(request):
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    body = {"error": code, "error_description": message, "errors": [message]}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def oauth_domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    status, code = _oauth_code(error)
    return _oauth_response(request, status, code, error.message, _retry_after(error))


def oauth_http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    """Litestar's own refusals (a body too large, say) in the OAuth shape."""
    return _oauth_response(request, error.status_code, "invalid_request", error.detail, None)


FRONTEGG_ERRORS: dict[Any, Any] = {DomainError: frontegg_error}
OAUTH_ERRORS: dict[Any, Any] = {
    DomainError: oauth_domain_error,
    ValidationException: oauth_http_error,
    HTTPException: oauth_http_error,
}


# --- the steps every route shares --------------------------------------------------------------


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


async def _exchange(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    services: Services,
    presented: ClientSecret,
    now: datetime,
) -> TokenPair:
    pair = await exchange.exchange_client_credentials(
        db_session,
        services.hasher,
        services.limiter,
        services.signer,
        services.settings.issuer,
        presented,
        address=client_address(request),
        now=now,
    )
    await db_session.commit()
    if services.prune_debounce.due(presented.client_id, time.monotonic()):
        await services.jobs.enqueue(PRUNE_REFRESH_TOKENS, client_id=presented.client_id)
    return pair


async def _rotate(
    db_session: AsyncSession,
    services: Services,
    refresh_token: str,
    now: datetime,
    client_id: str | None = None,
) -> TokenPair:
    try:
        pair = await exchange.rotate_refresh_token(
            db_session,
            services.signer,
            services.settings.issuer,
            refresh_token,
            now=now,
            client_id=client_id,
        )
    except exchange.RefreshTokenReused:
        await db_session.commit()  # the family stays revoked although this request fails
        raise
    await db_session.commit()
    return pair


async def _authenticate(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    services: Services,
    presented: ClientSecret,
    now: datetime,
) -> str:
    return await exchange.authenticate_client(
        db_session,
        services.hasher,
        services.limiter,
        presented,
        address=client_address(request),
        now=now,
    )


# --- Frontegg routes -------------------------------------------------------------------------


@post(EXCHANGE_V2, status_code=200, cache_control=NO_STORE, exception_handlers=FRONTEGG_ERRORS)
async def exchange_api_token(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> TokenPairOut:
    data = await read_body(request, ExchangeRequest)
    pair = await _exchange(request, db_session, services, data.presented, now)
    return token_pair_response(pair)


@post(EXCHANGE_V1, status_code=200, cache_control=NO_STORE, exception_handlers=FRONTEGG_ERRORS)
async def exchange_api_token_v1(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> LegacyTokenPairOut:
    data = await read_body(request, ExchangeRequest)
    pair = await _exchange(request, db_session, services, data.presented, now)
    return legacy_token_pair_response(pair)


@post(REFRESH_V2, status_code=200, cache_control=NO_STORE, exception_handlers=FRONTEGG_ERRORS)
async def refresh_api_token(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> TokenPairOut:
    data = await read_body(request, RefreshRequest)
    pair = await _rotate(db_session, services, data.refresh_token, now)
    return token_pair_response(pair)


# --- OAuth 2.0 -------------------------------------------------------------------------------


@post(
    OAUTH_TOKEN,
    status_code=200,
    cache_control=NO_STORE,
    response_headers=PRAGMA_NO_CACHE,
    exception_handlers=OAUTH_ERRORS,
)
async def oauth_token(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> OAuthTokenOut:
    """client_credentials (client authentication required) and refresh_token (optional; when
    given, the refresh token must be that client's)."""
    form = await read_form(request)
    grant_type = form.require("grant_type", MAX_GRANT_TYPE)
    if grant_type not in {CLIENT_CREDENTIALS, REFRESH_TOKEN}:
        raise UnsupportedGrantType(f"Unsupported grant_type {grant_type!r}")
    presented = client_secret_of(request, form)
    if grant_type == CLIENT_CREDENTIALS:
        if presented is None:
            raise InvalidClient("Client authentication is required")
        pair = await _exchange(request, db_session, services, presented, now)
    else:
        refresh_token = form.require("refresh_token")
        client_id = (
            await _authenticate(request, db_session, services, presented, now)
            if presented is not None
            else None
        )
        count_as(request, "refresh")
        pair = await _rotate(db_session, services, refresh_token, now, client_id)
    return oauth_token_response(pair)


@post(
    OAUTH_REVOKE,
    status_code=200,
    media_type=MediaType.TEXT,
    cache_control=NO_STORE,
    exception_handlers=OAUTH_ERRORS,
)
async def oauth_revoke(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> None:
    """RFC 7009: 200 whether or not the token was known, so nothing leaks about it."""
    form = await read_form(request)
    # A JWT's length grows with its claims; the body size limit bounds it.
    token = form.require("token", max_length=None)
    form.get("token_type_hint", MAX_GRANT_TYPE)  # a hint only: every kind is looked for anyway
    presented = client_secret_of(request, form)
    if presented is None:
        raise InvalidClient("Client authentication is required")
    client_id = await _authenticate(request, db_session, services, presented, now)
    await exchange.revoke_token(db_session, client_id, token, now)
    await db_session.commit()


ROUTES = [exchange_api_token, exchange_api_token_v1, refresh_api_token, oauth_token, oauth_revoke]
