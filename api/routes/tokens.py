"""/identity/resources/{users,tenants}/{api,access}-tokens: token management, four kinds."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, delete, get, patch, post

from api.dependencies import ActingDep, CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import CALLER
from api.schemas.common import PathId, read_body, reads
from api.schemas.tokens import (
    CreatedTenantAccessTokenOut,
    CreatedTenantApiTokenOut,
    CreatedUserAccessTokenOut,
    CreatedUserApiTokenOut,
    CreateTenantAccessTokenRequest,
    CreateTenantApiTokenBody,
    CreateTenantApiTokenRequest,
    CreateUserAccessTokenRequest,
    CreateUserApiTokenRequest,
    RevokedRefreshTokensOut,
    RotateRequest,
    TenantAccessTokensOut,
    TenantApiTokenOut,
    UpdateTenantApiTokenRequest,
    UserAccessTokensOut,
    UserApiTokenOut,
    created_tenant_access_token_response,
    created_tenant_api_token_response,
    created_user_access_token_response,
    created_user_api_token_response,
    given,
    tenant_access_token_response,
    tenant_api_token_response,
    user_access_token_response,
    user_api_token_response,
)
from api.security_headers import CARRIES_SECRET
from api.transaction import commit
from domain import tokens
from domain.after_commit import AfterCommit
from domain.models import ClientCredential

USER_API_TOKENS = "/identity/resources/users/api-tokens/v1"
USER_ACCESS_TOKENS = "/identity/resources/users/access-tokens/v1"
TENANT_API_TOKENS = "/identity/resources/tenants/api-tokens/v1"
TENANT_API_TOKENS_V2 = "/identity/resources/tenants/api-tokens/v2"
TENANT_ACCESS_TOKENS = "/identity/resources/tenants/access-tokens/v1"
ONE = "/{token_id:str}"
# Rotation (README "Rotation"): no Frontegg equivalent, beside the token's own path.
ROTATE = ONE + "/rotate"
ROTATION = ONE + "/rotation"
REFRESH_TOKENS = ONE + "/refresh-tokens"
# Frontegg answers a deletion with 200 and an empty body. The token is invalid here before the
# response, everywhere within the validity cache's bound (the README's "Validity cache").
DELETED = MediaType.TEXT


# --- user client credentials -----------------------------------------------------------------


@post(
    USER_API_TOKENS,
    dependencies=CALLER,
    status_code=201,
    opt=reads(CreateUserApiTokenRequest, CARRIES_SECRET),
)
async def create_user_api_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserApiTokenOut:
    data: CreateUserApiTokenRequest = await read_body(request)
    issued = await tokens.create_user_client_credential(
        db_session,
        caller,
        acting,
        services.hasher,
        services.secret_shape,
        description=data.description,
        metadata=data.metadata,
        expires_in_minutes=data.minutes,
        now=now,
    )
    await commit(db_session, services)
    return created_user_api_token_response(issued)


@get(USER_API_TOKENS, dependencies=CALLER)
async def get_user_api_tokens(
    caller: CallerDep, acting: ActingDep, db_session: SessionDep
) -> list[UserApiTokenOut]:
    listed = await tokens.list_user_client_credentials(db_session, caller, acting)
    return [user_api_token_response(view) for view in listed]


@delete(USER_API_TOKENS + ONE, dependencies=CALLER, status_code=200, media_type=DELETED)
async def delete_user_api_token(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    after = await tokens.delete_user_client_credential(db_session, caller, acting, token_id, now)
    await commit(db_session, services, after)


# --- user access tokens ----------------------------------------------------------------------


@post(
    USER_ACCESS_TOKENS,
    dependencies=CALLER,
    status_code=201,
    opt=reads(CreateUserAccessTokenRequest, CARRIES_SECRET),
)
async def create_user_access_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserAccessTokenOut:
    data: CreateUserAccessTokenRequest = await read_body(request)
    issued = await tokens.create_user_access_token(
        db_session,
        caller,
        acting,
        services.signer,
        services.settings.issuer,
        description=data.description,
        expires_in_minutes=data.minutes,
        now=now,
    )
    await commit(db_session, services, AfterCommit().add_access_tokens())
    return created_user_access_token_response(issued)


@get(USER_ACCESS_TOKENS, dependencies=CALLER)
async def get_user_access_tokens(
    caller: CallerDep, acting: ActingDep, db_session: SessionDep
) -> UserAccessTokensOut:
    listed = await tokens.list_user_access_tokens(db_session, caller, acting)
    return UserAccessTokensOut(access_tokens=[user_access_token_response(v) for v in listed])


@delete(USER_ACCESS_TOKENS + ONE, dependencies=CALLER, status_code=200, media_type=DELETED)
async def delete_user_access_token(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    after = await tokens.delete_user_access_token(db_session, caller, acting, token_id, now)
    await commit(db_session, services, after)


# --- tenant client credentials ---------------------------------------------------------------


@post(
    [TENANT_API_TOKENS_V2, TENANT_API_TOKENS],
    dependencies=CALLER,
    status_code=201,
    opt=reads(CreateTenantApiTokenBody, CARRIES_SECRET),
)
async def create_tenant_api_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedTenantApiTokenOut:
    data: CreateTenantApiTokenRequest = await read_body(request)
    issued = await tokens.create_tenant_client_credential(
        db_session,
        caller,
        acting,
        services.hasher,
        services.secret_shape,
        description=data.description,
        metadata=data.metadata,
        role_ids=data.role_ids,
        permission_ids=data.permission_ids,
        expires_in_minutes=data.minutes,
        now=now,
    )
    await commit(db_session, services)
    return created_tenant_api_token_response(issued)


@get(TENANT_API_TOKENS, dependencies=CALLER)
async def get_tenant_api_tokens(
    caller: CallerDep, acting: ActingDep, db_session: SessionDep
) -> list[TenantApiTokenOut]:
    listed = await tokens.list_tenant_client_credentials(db_session, caller, acting)
    return [tenant_api_token_response(view) for view in listed]


@patch(
    TENANT_API_TOKENS + ONE,
    dependencies=CALLER,
    status_code=200,
    opt=reads(UpdateTenantApiTokenRequest),
)
async def update_tenant_api_token(
    token_id: PathId,
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> TenantApiTokenOut:
    data: UpdateTenantApiTokenRequest = await read_body(request)
    change = tokens.CredentialChange(
        description=given(data.description),
        metadata=given(data.metadata),
        role_ids=given(data.role_ids),
        permission_ids=given(data.permission_ids),
    )
    view = await tokens.update_tenant_client_credential(
        db_session, caller, acting, token_id, change, now
    )
    await commit(db_session, services)
    return tenant_api_token_response(view)


@delete(TENANT_API_TOKENS + ONE, dependencies=CALLER, status_code=200, media_type=DELETED)
async def delete_tenant_api_token(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    after = await tokens.delete_tenant_client_credential(db_session, caller, acting, token_id, now)
    await commit(db_session, services, after)


# --- tenant access tokens --------------------------------------------------------------------


@post(
    TENANT_ACCESS_TOKENS,
    dependencies=CALLER,
    status_code=201,
    opt=reads(CreateTenantAccessTokenRequest, CARRIES_SECRET),
)
async def create_tenant_access_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedTenantAccessTokenOut:
    data: CreateTenantAccessTokenRequest = await read_body(request)
    issued = await tokens.create_tenant_access_token(
        db_session,
        caller,
        acting,
        services.signer,
        services.settings.issuer,
        description=data.description,
        role_ids=data.role_ids,
        expires_in_minutes=data.minutes,
        now=now,
    )
    await commit(db_session, services, AfterCommit().add_access_tokens())
    return created_tenant_access_token_response(issued)


@get(TENANT_ACCESS_TOKENS, dependencies=CALLER)
async def get_tenant_access_tokens(
    caller: CallerDep, acting: ActingDep, db_session: SessionDep
) -> TenantAccessTokensOut:
    listed = await tokens.list_tenant_access_tokens(db_session, caller, acting)
    return TenantAccessTokensOut(access_tokens=[tenant_access_token_response(v) for v in listed])


@delete(TENANT_ACCESS_TOKENS + ONE, dependencies=CALLER, status_code=200, media_type=DELETED)
async def delete_tenant_access_token(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    after = await tokens.delete_tenant_access_token(db_session, caller, acting, token_id, now)
    await commit(db_session, services, after)


# --- rotation ----------------------------------------------------------------------------------


@post(
    [USER_API_TOKENS + ROTATE, TENANT_API_TOKENS + ROTATE],
    dependencies=CALLER,
    status_code=200,
    opt=reads(RotateRequest, CARRIES_SECRET),
)
async def rotate_api_token(
    token_id: PathId,
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserApiTokenOut | CreatedTenantApiTokenOut:
    data: RotateRequest = await read_body(request)
    kind = _credential_kind(request)
    issued = await tokens.rotate_client_credential(
        db_session,
        caller,
        acting,
        kind,
        services.hasher,
        services.secret_shape,
        token_id,
        overlap_minutes=data.overlap_minutes,
        now=now,
    )
    await commit(db_session, services)
    if kind.per_user:
        return created_user_api_token_response(issued)
    return created_tenant_api_token_response(issued)


@delete(
    [USER_API_TOKENS + ROTATION, TENANT_API_TOKENS + ROTATION],
    dependencies=CALLER,
    status_code=200,
)
async def end_api_token_rotation(
    token_id: PathId,
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> UserApiTokenOut | TenantApiTokenOut:
    kind = _credential_kind(request)
    view = await tokens.end_credential_overlap(db_session, caller, acting, kind, token_id, now)
    await commit(db_session, services)
    if kind.per_user:
        return user_api_token_response(view)
    return tenant_api_token_response(view)


@post(
    [USER_ACCESS_TOKENS + ROTATE, TENANT_ACCESS_TOKENS + ROTATE],
    dependencies=CALLER,
    status_code=201,
    opt=reads(RotateRequest, CARRIES_SECRET),
)
async def roll_access_token(
    token_id: PathId,
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserAccessTokenOut | CreatedTenantAccessTokenOut:
    data: RotateRequest = await read_body(request)
    kind = tokens.ACCESS_TOKEN_KINDS[_resource(request)]
    issued, after = await tokens.roll_access_token(
        db_session,
        caller,
        acting,
        kind,
        services.signer,
        services.settings.issuer,
        token_id,
        overlap_minutes=data.overlap_minutes,
        now=now,
    )
    await commit(db_session, services, after)
    if kind.per_user:
        return created_user_access_token_response(issued)
    return created_tenant_access_token_response(issued)


def _resource(request: Request[Any, Any, Any]) -> tokens.Resource:
    """Whose tokens a rotation route serves: a user's, or the account's (its path says)."""
    return (
        "userApiTokens"
        if request.url.path.startswith("/identity/resources/users/")
        else ("tenantApiTokens")
    )


def _credential_kind(request: Request[Any, Any, Any]) -> tokens.TokenKind[ClientCredential]:
    return tokens.CLIENT_CREDENTIAL_KINDS[_resource(request)]


# --- revoke everything ---------------------------------------------------------------------------


@delete(USER_API_TOKENS + REFRESH_TOKENS, dependencies=CALLER, status_code=200)
async def revoke_user_api_token_refresh_tokens(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RevokedRefreshTokensOut:
    count, after = await tokens.revoke_user_client_credential_refresh_tokens(
        db_session, caller, acting, token_id, now
    )
    await commit(db_session, services, after)
    return RevokedRefreshTokensOut(revoked_refresh_tokens=count)


@delete(TENANT_API_TOKENS + REFRESH_TOKENS, dependencies=CALLER, status_code=200)
async def revoke_tenant_api_token_refresh_tokens(
    token_id: PathId,
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RevokedRefreshTokensOut:
    count, after = await tokens.revoke_tenant_client_credential_refresh_tokens(
        db_session, caller, acting, token_id, now
    )
    await commit(db_session, services, after)
    return RevokedRefreshTokensOut(revoked_refresh_tokens=count)


ROUTES = [
    create_user_api_token,
    get_user_api_tokens,
    delete_user_api_token,
    create_user_access_token,
    get_user_access_tokens,
    delete_user_access_token,
    create_tenant_api_token,
    get_tenant_api_tokens,
    update_tenant_api_token,
    delete_tenant_api_token,
    create_tenant_access_token,
    get_tenant_access_tokens,
    delete_tenant_access_token,
    rotate_api_token,
    end_api_token_rotation,
    roll_access_token,
    revoke_user_api_token_refresh_tokens,
    revoke_tenant_api_token_refresh_tokens,
]
