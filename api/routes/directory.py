"""Tenants, users, roles and permissions: the vendor-only directory routes."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, delete, get, patch, post, put

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep, TenantDep
from api.guards import VENDOR_IN_TENANT, VENDOR_ONLY
from api.schemas.common import OptionalTenantHeader, PathId, read_body, reads
from api.schemas.directory import (
    AddPermissionsBody,
    AddRolesBody,
    AssignedRolesOut,
    AssignRolesRequest,
    CreateTenantRequest,
    CreateUserRequest,
    PermissionOut,
    RoleOut,
    SetRolePermissionsRequest,
    TenantOut,
    UnassignRolesRequest,
    UpdatePermissionRequest,
    UpdateRoleRequest,
    UpdateUserRequest,
    UserCreatedOut,
    UserOut,
    permission_response,
    role_response,
    role_summary,
    tenant_response,
    user_created_response,
    user_response,
)
from api.schemas.tokens import RevokedEveryTokenOut, revoked_every_token_response
from api.transaction import commit
from domain import directory, tokens

TENANTS = "/tenants/resources/tenants/v1"
TENANT = TENANTS + "/{tenant_id:str}"
USERS_V2 = "/identity/resources/users/v2"
USER = "/identity/resources/users/v1/{user_id:str}"
USER_ROLES = USER + "/roles"
ROLES = "/identity/resources/roles/v1"
ROLE = ROLES + "/{role_id:str}"
ROLE_PERMISSIONS = ROLE + "/permissions"
PERMISSIONS = "/identity/resources/permissions/v1"
PERMISSION = PERMISSIONS + "/{permission_id:str}"
# Revoke every token of a user or an account; the user or account stays.
USER_TOKENS = USER + "/tokens"
TENANT_TOKENS = TENANT + "/tokens"


# --- tenants ----------------------------------------------------------------------------------


@post(TENANTS, dependencies=VENDOR_ONLY, status_code=201, opt=reads(CreateTenantRequest))
async def create_tenant(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> TenantOut:
    data: CreateTenantRequest = await read_body(request)
    tenant, after = await directory.create_tenant(
        db_session, vendor, data.tenant_id, data.name, now
    )
    await commit(db_session, services, after)
    return tenant_response(tenant)


@get(TENANTS, dependencies=VENDOR_ONLY)
async def list_tenants(vendor: CallerDep, db_session: SessionDep) -> list[TenantOut]:
    return [tenant_response(tenant) for tenant in await directory.list_tenants(db_session)]


@get(TENANT, dependencies=VENDOR_ONLY)
async def get_tenant(tenant_id: PathId, vendor: CallerDep, db_session: SessionDep) -> TenantOut:
    return tenant_response(await directory.get_tenant(db_session, tenant_id))


# Frontegg answers these deletions with 200 and an empty body.
@delete(TENANT, dependencies=VENDOR_ONLY, status_code=200, media_type=MediaType.TEXT)
async def delete_tenant(
    tenant_id: PathId,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    # Every token in the tenant is invalid before the answer; the job removes the rows.
    after = await directory.delete_tenant(db_session, vendor, tenant_id, now)
    await commit(db_session, services, after)


# --- users ------------------------------------------------------------------------------------


@post(USERS_V2, dependencies=VENDOR_IN_TENANT, status_code=201, opt=reads(CreateUserRequest))
async def create_user(
    request: Request[Any, Any, Any],
    tenant_id: TenantDep,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> UserCreatedOut:
    data: CreateUserRequest = await read_body(request)
    user, after = await directory.create_user(
        db_session, vendor, tenant_id, data.to_new_user(), now
    )
    await commit(db_session, services, after)
    return user_created_response(user)


@get(USER, dependencies=VENDOR_ONLY)
async def get_user(
    user_id: PathId, tenant_id: OptionalTenantHeader, vendor: CallerDep, db_session: SessionDep
) -> UserOut:
    return user_response(await directory.get_user(db_session, user_id, tenant_id))


@delete(USER, dependencies=VENDOR_ONLY, status_code=200, media_type=MediaType.TEXT)
async def delete_user(
    user_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    # Every token of the user is invalid before the answer; the job removes the rows.
    after = await directory.delete_user(db_session, vendor, user_id, tenant_id, now)
    await commit(db_session, services, after)


@post(USER_ROLES, dependencies=VENDOR_IN_TENANT, status_code=201, opt=reads(AssignRolesRequest))
async def assign_roles_to_user(
    request: Request[Any, Any, Any],
    user_id: PathId,
    tenant_id: TenantDep,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> AssignedRolesOut:
    data: AssignRolesRequest = await read_body(request)
    roles = await directory.assign_roles(db_session, vendor, user_id, tenant_id, data.role_ids, now)
    await commit(db_session, services)
    return AssignedRolesOut(
        tenant_id=tenant_id, user_id=user_id, roles=[role_summary(role) for role in roles]
    )


@put(USER, dependencies=VENDOR_ONLY, opt=reads(UpdateUserRequest))
async def update_user(
    request: Request[Any, Any, Any],
    user_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> UserOut:
    data: UpdateUserRequest = await read_body(request)
    user = await directory.update_user(
        db_session, vendor, user_id, tenant_id, data.to_change(), now
    )
    await commit(db_session, services)
    return user_response(user)


# Frontegg answers with 200 and the roles the user still holds there.
@delete(USER_ROLES, dependencies=VENDOR_IN_TENANT, status_code=200, opt=reads(UnassignRolesRequest))
async def unassign_roles_from_user(
    request: Request[Any, Any, Any],
    user_id: PathId,
    tenant_id: TenantDep,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> AssignedRolesOut:
    data: UnassignRolesRequest = await read_body(request)
    roles = await directory.unassign_roles(
        db_session, vendor, user_id, tenant_id, data.role_ids, now
    )
    await commit(db_session, services)
    return AssignedRolesOut(
        tenant_id=tenant_id, user_id=user_id, roles=[role_summary(role) for role in roles]
    )


# --- roles ------------------------------------------------------------------------------------


@get(ROLES, dependencies=VENDOR_ONLY)
async def list_roles(
    tenant_id: OptionalTenantHeader, vendor: CallerDep, db_session: SessionDep
) -> list[RoleOut]:
    return [role_response(role) for role in await directory.list_roles(db_session, tenant_id)]


@post(ROLES, dependencies=VENDOR_ONLY, status_code=201, opt=reads(AddRolesBody))
async def create_roles(
    request: Request[Any, Any, Any],
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> list[RoleOut]:
    data: AddRolesBody = await read_body(request)
    roles = await directory.create_roles(
        db_session, vendor, tenant_id, [item.to_new_role() for item in data], now
    )
    await commit(db_session, services)
    return [role_response(role) for role in roles]


@patch(ROLE, dependencies=VENDOR_ONLY, opt=reads(UpdateRoleRequest))
async def update_role(
    request: Request[Any, Any, Any],
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RoleOut:
    data: UpdateRoleRequest = await read_body(request)
    role = await directory.update_role(
        db_session, vendor, role_id, tenant_id, data.to_change(), now
    )
    await commit(db_session, services)
    return role_response(role)


@delete(ROLE, dependencies=VENDOR_ONLY)
async def delete_role(
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    await directory.delete_role(db_session, vendor, role_id, tenant_id, now)
    await commit(db_session, services)


@put(ROLE_PERMISSIONS, dependencies=VENDOR_ONLY, opt=reads(SetRolePermissionsRequest))
async def set_role_permissions(
    request: Request[Any, Any, Any],
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RoleOut:
    data: SetRolePermissionsRequest = await read_body(request)
    role = await directory.set_role_permissions(
        db_session, vendor, role_id, tenant_id, data.permission_ids, now
    )
    await commit(db_session, services)
    return role_response(role)


# --- permissions ------------------------------------------------------------------------------


@get(PERMISSIONS, dependencies=VENDOR_ONLY)
async def list_permissions(vendor: CallerDep, db_session: SessionDep) -> list[PermissionOut]:
    return [permission_response(p) for p in await directory.list_permissions(db_session)]


@post(PERMISSIONS, dependencies=VENDOR_ONLY, status_code=201, opt=reads(AddPermissionsBody))
async def create_permissions(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> list[PermissionOut]:
    data: AddPermissionsBody = await read_body(request)
    permissions = await directory.create_permissions(
        db_session, vendor, [item.to_new_permission() for item in data], now
    )
    await commit(db_session, services)
    return [permission_response(p) for p in permissions]


@patch(PERMISSION, dependencies=VENDOR_ONLY, opt=reads(UpdatePermissionRequest))
async def update_permission(
    request: Request[Any, Any, Any],
    permission_id: PathId,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> PermissionOut:
    data: UpdatePermissionRequest = await read_body(request)
    permission = await directory.update_permission(
        db_session, vendor, permission_id, data.to_change(), now
    )
    await commit(db_session, services)
    return permission_response(permission)


@delete(PERMISSION, dependencies=VENDOR_ONLY)
async def delete_permission(
    permission_id: PathId,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> None:
    await directory.delete_permission(db_session, vendor, permission_id, now)
    await commit(db_session, services)


# --- revoke every token of a user or an account ---------------------------------------------------


@delete(USER_TOKENS, dependencies=VENDOR_ONLY, status_code=200)
async def revoke_every_token_of_user(
    user_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RevokedEveryTokenOut:
    # Every token of the user is invalid before the answer; the job removes the rows.
    revoked, after = await tokens.revoke_every_token_of_user(
        db_session, vendor, user_id, tenant_id, now
    )
    await commit(db_session, services, after)
    return revoked_every_token_response(revoked)


@delete(TENANT_TOKENS, dependencies=VENDOR_ONLY, status_code=200)
async def revoke_every_token_of_tenant(
    tenant_id: PathId,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> RevokedEveryTokenOut:
    # Every token in the account is invalid before the answer; the job removes the rows.
    revoked, after = await tokens.revoke_every_token_of_tenant(db_session, vendor, tenant_id, now)
    await commit(db_session, services, after)
    return revoked_every_token_response(revoked)


ROUTES = [
    create_tenant,
    list_tenants,
    get_tenant,
    delete_tenant,
    create_user,
    get_user,
    delete_user,
    update_user,
    assign_roles_to_user,
    unassign_roles_from_user,
    list_roles,
    create_roles,
    update_role,
    delete_role,
    set_role_permissions,
    list_permissions,
    create_permissions,
    update_permission,
    delete_permission,
    revoke_every_token_of_user,
    revoke_every_token_of_tenant,
]
