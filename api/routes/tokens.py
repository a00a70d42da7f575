"""/identity/resources/{users,tenants}/{api,access}-tokens: token management, four kinds."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, delete, get, patch, post

from api.dependencies import ActingDep, CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import CALLER
from api.schemas.common import PathId, read_body
from api.schemas.tokens import (
    CreatedTenantAccessTokenOut,
    CreatedTenantApiTokenOut,
    CreatedUserAccessTokenOut,
    CreatedUserApiTokenOut,
    CreateTenantAccessTokenRequest,
    CreateTenantApiTokenRequest,
    CreateUserAccessTokenRequest,
    CreateUserApiTokenRequest,
    RevokedRefreshTokensOut,
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

USER_API_TOKENS = "/identity/resources/users/api-tokens/v1"
USER_ACCESS_TOKENS = "/identity/resources/users/access-tokens/v1"
TENANT_API_TOKENS = "/identity/resources/tenants/api-tokens/v1"
TENANT_API_TOKENS_V2 = "/identity/resources/tenants/api-tokens/v2"
TENANT_ACCESS_TOKENS = "/identity/resources/tenants/access-tokens/v1"
ONE = "/{token_id:str}"
REFRESH_TOKENS = ONE + "/refresh-tokens"
# Frontegg answers a deletion with 200 and an empty body. The token is invalid here before the
# response, everywhere within the validity cache's bound (the README's "Validity cache").
DELETED = MediaType.TEXT


# --- user client credentials -----------------------------------------------------------------


@post(USER_API_TOKENS, dependencies=CALLER, status_code=201, opt=CARRIES_SECRET)
async def create_user_api_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserApiTokenOut:
    data = await read_body(request, CreateUserApiTokenRequest)
    issued = await tokens.create_user_client_credential(
        db_session,
        caller,
        acting,
        services.hasher,
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


@post(USER_ACCESS_TOKENS, dependencies=CALLER, status_code=201, opt=CARRIES_SECRET)
async def create_user_access_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedUserAccessTokenOut:
    data = await read_body(request, CreateUserAccessTokenRequest)
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
    await commit(db_session, services)
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
    opt=CARRIES_SECRET,
)
async def create_tenant_api_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedTenantApiTokenOut:
    data = await read_body(request, CreateTenantApiTokenRequest)
    issued = await tokens.create_tenant_client_credential(
        db_session,
        caller,
        acting,
        services.hasher,
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


@patch(TENANT_API_TOKENS + ONE, dependencies=CALLER, status_code=200)
async def update_tenant_api_token(
    token_id: PathId,
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> TenantApiTokenOut:
    data = await read_body(request, UpdateTenantApiTokenRequest)
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


@post(TENANT_ACCESS_TOKENS, dependencies=CALLER, status_code=201, opt=CARRIES_SECRET)
async def create_tenant_access_token(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> CreatedTenantAccessTokenOut:
    data = await read_body(request, CreateTenantAccessTokenRequest)
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
    await commit(db_session, services)
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
    revoke_user_api_token_refresh_tokens,
    revoke_tenant_api_token_refresh_tokens,
]
