"""Token validation (Frontegg and RFC 7662 introspection) and the vendor-only access-token routes
the Frontegg SDKs call. Time comes from domain.clock directly rather than through the `now`
dependency: one step less on the hottest route of the service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import MediaType, Request, Response, get, post
from msgspec.json import encode as encode_json

from api.dependencies import CallerDep, ServicesDep
from api.guards import VENDOR_ONLY
from api.schemas.common import FORM, OptionalTenantHeader, PathId, answers, reads
from api.schemas.exchange import read_form
from api.schemas.validation import (
    IntrospectForm,
    IntrospectionOut,
    TenantAccessTokenGrantsOut,
    UserAccessTokenGrantsOut,
    ValidatedOut,
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
MAX_TOKEN_TYPE_HINT = 64
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


@post(VALIDATE, status_code=200, opt=answers(ValidatedOut))
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


@post(
    INTROSPECT,
    dependencies=VENDOR_ONLY,
    status_code=200,
    opt=reads(IntrospectForm, answers(IntrospectionOut), media_type=FORM),
)
async def introspect_token(
    request: Request[Any, Any, Any], vendor: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    # Decoded as strictly as the other OAuth routes' forms: no NUL, no repeated field.
    form = await read_form(request)
    token = form.get("token", max_length=None)  # a JWT grows with its claims; the body is bounded
    if token is None or not token.strip():
        raise InvalidInput("token is required (application/x-www-form-urlencoded)")
    form.get("token_type_hint", MAX_TOKEN_TYPE_HINT)
    # token_type_hint is only a hint (RFC 7662 lets a server ignore it): both kinds are tried.
    now = utcnow()
    try:
        validated = await services.validity.validate(
            services.keyring, token.strip(), ALL_TOKEN_TYPES, now
        )
    except Unauthenticated:
        return inactive_response()
    if validated.is_access_token:
        # An introspection of a live access token is a use of it, as a validation is (README
        # "Last used"); the vendor's API is the caller, so no address is recorded.
        services.usage.note_access_token(validated.sub, now, None)
    return introspection_response(validated)


@get(VENDOR_USER_ACCESS_TOKENS + ACTIVE, dependencies=VENDOR_ONLY, opt=answers(list[str]))
async def active_user_access_tokens(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> Response[bytes]:
    return await _active(request, services, user_tokens=True, tenant_id=tenant_id)


@get(VENDOR_TENANT_ACCESS_TOKENS + ACTIVE, dependencies=VENDOR_ONLY, opt=answers(list[str]))
async def active_tenant_access_tokens(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> Response[bytes]:
    return await _active(request, services, user_tokens=False, tenant_id=tenant_id)


async def _active(
    request: Request[Any, Any, Any], services: Services, *, user_tokens: bool, tenant_id: str | None
) -> Response[bytes]:
    """The ids of the access tokens valid now, as the process keeps them (see
    domain/active_tokens.py); gzip-compressed when the client accepts it and the answer is
    kept."""
    now = utcnow()
    await services.validity.require_m2m_switch_on(now)
    answer = await services.active_lists.answer(
        user_tokens=user_tokens, tenant_id=tenant_id, now=now
    )
    vary = {"Vary": "Accept-Encoding"}
    # Compressed once per kept answer; one built for this request alone goes as it is (a
    # client that accepts gzip accepts that too).
    if answer.kept and accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(
            await answer.gzipped(),
            media_type=MediaType.JSON,
            headers={**vary, "Content-Encoding": "gzip"},
        )
    return Response(answer.body, media_type=MediaType.JSON, headers=vary)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether Accept-Encoding lists gzip (or *) without q=0."""
    for item in accept_encoding.split(","):
        coding, _, parameters = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = parameters.strip().lower().removeprefix("q=").strip()
        try:
            return not parameters.strip() or float(quality) > 0
        except ValueError:
            return False
    return False


def _note_lookup(services: Services, token_id: str, now: datetime) -> None:
    """A lookup by id that found a live token is a use of it (README "Last used"): the Frontegg
    SDKs check access tokens this way. In memory only, as on validation; the vendor's API is the
    caller, so no address is recorded."""
    services.usage.note_access_token(token_id, now, None)


@get(VENDOR_USER_ACCESS_TOKENS + ONE, dependencies=VENDOR_ONLY)
async def user_access_token_data(
    token_id: PathId,
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> UserAccessTokenGrantsOut:
    now = utcnow()
    grants = await services.validity.access_token(
        token_id, user_token=True, tenant_id=tenant_id, now=now
    )
    _note_lookup(services, token_id, now)
    return user_access_token_grants_response(grants)


@get(VENDOR_TENANT_ACCESS_TOKENS + ONE, dependencies=VENDOR_ONLY)
async def tenant_access_token_data(
    token_id: PathId,
    vendor: CallerDep,
    services: ServicesDep,
    tenant_id: OptionalTenantHeader,
) -> TenantAccessTokenGrantsOut:
    now = utcnow()
    grants = await services.validity.access_token(
        token_id, user_token=False, tenant_id=tenant_id, now=now
    )
    _note_lookup(services, token_id, now)
    return tenant_access_token_grants_response(grants)


ROUTES = [
    validate_token,
    introspect_token,
    active_user_access_tokens,
    active_tenant_access_tokens,
    user_access_token_data,
    tenant_access_token_data,
]
