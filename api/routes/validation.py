"""Token validation (Frontegg and RFC 7662 introspection) and the vendor-only access-token routes
the Frontegg SDKs call. Time comes from domain.clock directly rather than through the `now`
dependency: one step less on the hottest route of the service."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get, post
from msgspec.json import encode as encode_json

from api.dependencies import CallerDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import OptionalTenantHeader, PathId
from api.schemas.validation import (
    TenantAccessTokenGrantsOut,
    UserAccessTokenGrantsOut,
    inactive_response,
    introspection_response,
    tenant_access_token_grants_response,
    user_access_token_grants_response,
    validated_response,
)
from api.state import Services
from domain.clock import utcnow
from domain.errors import InvalidInput, Unauthenticated
from domain.keys import UnsupportedAlgorithm
from domain.last_used import CLIENT_ADDRESS_HEADER
from domain.tokens import active_access_token_ids
from domain.validity import ACCESS_TOKEN_TYPES, ALL_TOKEN_TYPES, CREDENTIAL_TYPES

VALIDATE = "/identity/resources/auth/v1/validate"
INTROSPECT = "/oauth/introspect"
VENDOR_USER_ACCESS_TOKENS = "/identity/resources/vendor-only/users/access-tokens/v1"
VENDOR_TENANT_ACCESS_TOKENS = "/identity/resources/vendor-only/tenants/access-tokens/v1"
ACTIVE = "/active"
ONE = "/{token_id:str}"
WHAT_VALIDATE_TAKES = (
    "an access token in X-API-KEY, or a client-credential JWT in Authorization: Bearer"
)
VENDOR_TOKEN_REFUSED = f"This is a vendor token: validate takes {WHAT_VALIDATE_TAKES}"
CLIENT_ADDRESS = CLIENT_ADDRESS_HEADER.encode("ascii")


def _presented(request: Request[Any, Any, Any]) -> tuple[str, frozenset[str], bytes | None]:
    """The token and the kinds its header may carry: X-API-KEY an access token (it wins when both
    headers are sent), Authorization: Bearer a client-credential JWT; and the address the
    vendor's API says its caller came from (CLIENT_ADDRESS_HEADER), unchecked until written."""
    api_key = authorization = b""
    address = None
    # The raw ASGI headers (lower-case names): cheaper than building a Headers object.
    for name, value in request.scope["headers"]:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization":
            authorization = value
        elif name == CLIENT_ADDRESS:
            address = value
    if api_key.strip():
        return api_key.strip().decode("latin-1"), ACCESS_TOKEN_TYPES, address
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip().decode("latin-1"), CREDENTIAL_TYPES, address
    raise Unauthenticated(f"Missing token: {WHAT_VALIDATE_TAKES}")


def _explained(services: Services, token: str, refused: UnsupportedAlgorithm) -> Unauthenticated:
    """The refusal of a token not signed with RS256, saying so when it is the vendor's own token
    (HS256): checked only then, so the valid tokens never pay for it."""
    if refused.alg == "HS256" and services.vendor.is_vendor_token(token):
        return Unauthenticated(VENDOR_TOKEN_REFUSED)
    return refused


@post(VALIDATE, status_code=200)
async def validate_token(request: Request[Any, Any, Any]) -> Response[bytes]:
    # The hot path, kept lean on purpose: services from the app state rather than through DI,
    # headers read from the ASGI scope, and the body encoded here (Litestar's own encoding of a
    # returned struct costs more than the whole validation when it is warm).
    services: Services = request.app.state.services
    token, types, address = _presented(request)
    now = utcnow()
    try:
        validated = await services.validity.validate(services.keyring, token, types, now)
    except UnsupportedAlgorithm as refused:
        raise _explained(services, token, refused) from None
    if validated.is_access_token:
        # In memory only: written in batches (domain/last_used.py), never on this path.
        services.usage.note_access_token(validated.sub, now, address)
    return Response(encode_json(validated_response(validated)), media_type=MediaType.JSON)


@post(INTROSPECT, dependencies=VENDOR_ONLY, status_code=200)
async def introspect_token(
    request: Request[Any, Any, Any], vendor: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not token.strip():
        raise InvalidInput("token is required (application/x-www-form-urlencoded)")
    # token_type_hint is only a hint (RFC 7662 lets a server ignore it): both kinds are tried.
    try:
        validated = await services.validity.validate(
            services.keyring, token.strip(), ALL_TOKEN_TYPES, utcnow()
        )
    except Unauthenticated:
        return inactive_response()
    return introspection_response(validated)


@get(VENDOR_USER_ACCESS_TOKENS + ACTIVE, dependencies=VENDOR_ONLY)
async def active_user_access_tokens(
    vendor: CallerDep,
    services: ServicesDep,
    db_session: SessionDep,
    tenant_id: OptionalTenantHeader,
) -> Response[str]:
    now = utcnow()
    await services.validity.require_m2m_switch_on(now)
    ids = await active_access_token_ids(db_session, user_tokens=True, tenant_id=tenant_id, now=now)
    return Response(ids, media_type=MediaType.JSON)


@get(VENDOR_TENANT_ACCESS_TOKENS + ACTIVE, dependencies=VENDOR_ONLY)
async def active_tenant_access_tokens(
    vendor: CallerDep,
    services: ServicesDep,
    db_session: SessionDep,
    tenant_id: OptionalTenantHeader,
) -> Response[str]:
    now = utcnow()
    await services.validity.require_m2m_switch_on(now)
    ids = await active_access_token_ids(db_session, user_tokens=False, tenant_id=tenant_id, now=now)
    return Response(ids, media_type=MediaType.JSON)


@get(VENDOR_USER_ACCESS_TOKENS + ONE, dependencies=VENDOR_ONLY)
async def user_access_token_data(
    token_id: PathId,
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> UserAccessTokenGrantsOut:
    grants = await services.validity.access_token(
        token_id, user_token=True, tenant_id=tenant_id, now=utcnow()
    )
    return user_access_token_grants_response(grants)


@get(VENDOR_TENANT_ACCESS_TOKENS + ONE, dependencies=VENDOR_ONLY)
async def tenant_access_token_data(
    token_id: PathId,
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> TenantAccessTokenGrantsOut:
    grants = await services.validity.access_token(
        token_id, user_token=False, tenant_id=tenant_id, now=utcnow()
    )
    return tenant_access_token_grants_response(grants)


ROUTES = [
    validate_token,
    introspect_token,
    active_user_access_tokens,
    active_tenant_access_tokens,
    user_access_token_data,
    tenant_access_token_data,
]
