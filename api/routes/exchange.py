"""Client-credential exchange and refresh: Frontegg's api-token routes, and OAuth 2.0's
/oauth/token (RFC 6749) and /oauth/revoke (RFC 7009). Their error shapes are in api/errors.py."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from litestar import MediaType, Request, post
from litestar.datastructures import CacheControlHeader
from sqlalchemy.ext.asyncio import AsyncSession

from api.dependencies import ClientAddressDep, NowDep, ServicesDep, SessionDep
from api.errors import OAUTH_ERRORS
from api.metrics import count_as
from api.schemas.common import FORM, read_body, reads
from api.schemas.exchange import (
    ExchangeRequest,
    LegacyTokenPairOut,
    OAuthRevokeForm,
    OAuthTokenForm,
    OAuthTokenOut,
    RefreshRequest,
    TokenPairOut,
    client_secret_of,
    legacy_token_pair_response,
    oauth_token_response,
    read_form,
    token_pair_response,
)
from api.security_headers import CARRIES_SECRET
from api.state import Services
from api.transaction import commit
from domain import exchange
from domain.exchange import ClientSecret, InvalidClient, TokenPair, UnsupportedGrantType
from domain.jobs import PRUNE_REFRESH_TOKENS

EXCHANGE_V2 = "/identity/resources/auth/v2/api-token"
EXCHANGE_V1 = "/identity/resources/auth/v1/api-token"
REFRESH_V2 = "/identity/resources/auth/v2/api-token/token/refresh"
OAUTH_TOKEN = "/oauth/token"
OAUTH_REVOKE = "/oauth/revoke"

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
MAX_GRANT_TYPE = 64


# The routes that hand out tokens are never cached through api/security_headers.py
# (CARRIES_SECRET); revocation's answer is not cached either.
NO_STORE = CacheControlHeader(no_store=True)


# --- the steps every route shares --------------------------------------------------------------


async def _exchange(
    db_session: AsyncSession,
    services: Services,
    presented: ClientSecret,
    address: str,
    now: datetime,
) -> TokenPair:
    pair = await exchange.exchange_client_credentials(
        db_session,
        services.hasher,
        services.limiter,
        services.secret_shape,
        services.signer,
        services.settings.issuer,
        presented,
        address=address,
        now=now,
    )
    await commit(db_session, services)
    services.usage.note_credential(pair.client_id, now, address)
    # A busy credential need not be pruned on every exchange. Asked only once the exchange has
    # committed, so that a failed one does not spend the credential's window.
    if services.prune_debounce.due(presented.client_id, time.monotonic()):
        await services.jobs.enqueue(PRUNE_REFRESH_TOKENS, client_id=presented.client_id)
    return pair


async def _rotate(
    db_session: AsyncSession,
    services: Services,
    refresh_token: str,
    address: str,
    now: datetime,
    client_id: str | None = None,
) -> TokenPair:
    try:
        pair = await exchange.rotate_refresh_token(
            db_session,
            services.limiter,
            services.secret_shape,
            services.signer,
            services.settings.issuer,
            refresh_token,
            address=address,
            now=now,
            client_id=client_id,
        )
    except exchange.RefreshTokenReused as reused:
        # The family stays revoked although this fails.
        await commit(db_session, services, reused.after)
        raise
    await commit(db_session, services)
    services.usage.note_credential(pair.client_id, now, address)
    return pair


async def _authenticate(
    db_session: AsyncSession,
    services: Services,
    presented: ClientSecret,
    address: str,
    now: datetime,
) -> str:
    return await exchange.authenticate_client(
        db_session,
        services.hasher,
        services.limiter,
        services.secret_shape,
        presented,
        address=address,
        now=now,
    )


# --- Frontegg routes -------------------------------------------------------------------------


@post(
    EXCHANGE_V2,
    status_code=200,
    opt=reads(ExchangeRequest, CARRIES_SECRET),
)
async def exchange_api_token(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
) -> TokenPairOut:
    data: ExchangeRequest = await read_body(request)
    pair = await _exchange(db_session, services, data.presented, client_address, now)
    return token_pair_response(pair)


@post(
    EXCHANGE_V1,
    status_code=200,
    opt=reads(ExchangeRequest, CARRIES_SECRET),
)
async def exchange_api_token_v1(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
) -> LegacyTokenPairOut:
    data: ExchangeRequest = await read_body(request)
    pair = await _exchange(db_session, services, data.presented, client_address, now)
    return legacy_token_pair_response(pair)


@post(
    REFRESH_V2,
    status_code=200,
    opt=reads(RefreshRequest, CARRIES_SECRET),
)
async def refresh_api_token(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
) -> TokenPairOut:
    data: RefreshRequest = await read_body(request)
    pair = await _rotate(db_session, services, data.refresh_token, client_address, now)
    return token_pair_response(pair)


# --- OAuth 2.0 -------------------------------------------------------------------------------


@post(
    OAUTH_TOKEN,
    status_code=200,
    exception_handlers=OAUTH_ERRORS,
    opt=reads(OAuthTokenForm, CARRIES_SECRET, media_type=FORM),
)
async def oauth_token(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
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
        pair = await _exchange(db_session, services, presented, client_address, now)
    else:
        refresh_token = form.require("refresh_token")
        client_id = (
            await _authenticate(db_session, services, presented, client_address, now)
            if presented is not None
            else None
        )
        count_as(request, "refresh")
        pair = await _rotate(db_session, services, refresh_token, client_address, now, client_id)
    return oauth_token_response(pair)


@post(
    OAUTH_REVOKE,
    status_code=200,
    media_type=MediaType.TEXT,
    cache_control=NO_STORE,
    exception_handlers=OAUTH_ERRORS,
    opt=reads(OAuthRevokeForm, media_type=FORM),
)
async def oauth_revoke(
    request: Request[Any, Any, Any],
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
) -> None:
    """RFC 7009: 200 whether or not the token was known, so nothing leaks about it."""
    form = await read_form(request)
    # A JWT's length grows with its claims; the body size limit bounds it.
    token = form.require("token", max_length=None)
    form.get("token_type_hint", MAX_GRANT_TYPE)  # a hint only: every kind is looked for anyway
    presented = client_secret_of(request, form)
    if presented is None:
        raise InvalidClient("Client authentication is required")
    client_id = await _authenticate(db_session, services, presented, client_address, now)
    after = await exchange.revoke_token(db_session, services.secret_shape, client_id, token, now)
    await commit(db_session, services, after)
    # The client authenticated with its secret: a use of the credential, as an exchange is.
    services.usage.note_credential(client_id, now, client_address)


ROUTES = [exchange_api_token, exchange_api_token_v1, refresh_api_token, oauth_token, oauth_revoke]
