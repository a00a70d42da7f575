"""Tenants, users, roles and permissions: the vendor-only directory routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import MediaType, Request, delete, get, patch, post, put

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import OptionalTenantHeader, PathId, TenantHeader, read_body
from api.schemas.directory import (
    AddPermissionsBody,
    AddRolesBody,
    AssignedRolesResponse,
    AssignRolesRequest,
    CreateTenantRequest,
    CreateUserRequest,
    PermissionResponse,
    RoleResponse,
    SetRolePermissionsRequest,
    TenantResponse,
    UpdateRoleRequest,
    UserCreatedResponse,
    UserResponse,
    permission_response,
    role_response,
    role_summary,
    tenant_response,
    user_created_response,
    user_response,
)
from api.state import Services
from domain import directory
from domain.jobs import CASCADE_DELETIONS

TENANTS = "/tenants/resources/tenants/v1"
TENANT = TENANTS + "/{tenant_id:str}"
USERS_V2 = "/identity/resources/users/v2"
USER = "/identity/resources/users/v1/{user_id:str}"
USER_ROLES = USER + "/roles"
ROLES = "/identity/resources/roles/v1"
ROLE = ROLES + "/{role_id:str}"
ROLE_PERMISSIONS = ROLE + "/permissions"
PERMISSIONS = "/identity/resources/permissions/v1"


# --- tenants ----------------------------------------------------------------------------------


@post(TENANTS, dependencies=VENDOR_ONLY, status_code=201)
async def create_tenant(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> TenantResponse:
    data = await read_body(request, CreateTenantRequest)
    tenant = await directory.create_tenant(db_session, vendor, data.tenant_id, data.name, now)
    await db_session.commit()
    # The id may have belonged to a deleted tenant, whose tombstone would slow this one down.
    await services.validity.forget_tenant(tenant.id)
    return tenant_response(tenant)


@get(TENANTS, dependencies=VENDOR_ONLY)
async def list_tenants(vendor: CallerDep, db_session: SessionDep) -> list[TenantResponse]:
    return [tenant_response(tenant) for tenant in await directory.list_tenants(db_session)]


@get(TENANT, dependencies=VENDOR_ONLY)
async def get_tenant(
    tenant_id: PathId, vendor: CallerDep, db_session: SessionDep
) -> TenantResponse:
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
    created_at = await directory.delete_tenant(db_session, vendor, tenant_id, now)
    await db_session.commit()
    # Every token in the tenant is invalid before the answer; the job removes the rows.
    await services.validity.invalidate_tenant(tenant_id, created_at)
    await services.jobs.enqueue(CASCADE_DELETIONS, tenant_id=tenant_id)


# --- users ------------------------------------------------------------------------------------


@post(USERS_V2, dependencies=VENDOR_ONLY, status_code=201)
async def create_user(
    request: Request[Any, Any, Any],
    tenant_id: TenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> UserCreatedResponse:
    data = await read_body(request, CreateUserRequest)
    user = await directory.create_user(db_session, vendor, tenant_id, data.to_new_user(), now)
    await db_session.commit()
    # The id may have belonged to a deleted user, whose tombstone would slow this one down.
    await services.validity.forget_user(user.user.id)
    return user_created_response(user)


@get(USER, dependencies=VENDOR_ONLY)
async def get_user(
    user_id: PathId, tenant_id: OptionalTenantHeader, vendor: CallerDep, db_session: SessionDep
) -> UserResponse:
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
    created_at = await directory.delete_user(db_session, vendor, user_id, tenant_id, now)
    await db_session.commit()
    await finish_user_deletion(services, user_id, created_at)


async def finish_user_deletion(services: Services, user_id: str, created_at: datetime) -> None:
    """After the commit that marked the user deleted: every token of it is invalid here now and
    everywhere within 100 ms; then the cascade job removes the rows."""
    await services.validity.invalidate_user(user_id, created_at)
    await services.jobs.enqueue(CASCADE_DELETIONS, user_id=user_id)


@post(USER_ROLES, dependencies=VENDOR_ONLY, status_code=201)
async def assign_roles_to_user(
    request: Request[Any, Any, Any],
    user_id: PathId,
    tenant_id: TenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    now: NowDep,
) -> AssignedRolesResponse:
    data = await read_body(request, AssignRolesRequest)
    roles = await directory.assign_roles(db_session, vendor, user_id, tenant_id, data.role_ids, now)
    await db_session.commit()
    return AssignedRolesResponse(
        tenant_id=tenant_id, user_id=user_id, roles=[role_summary(role) for role in roles]
    )


# --- roles ------------------------------------------------------------------------------------


@get(ROLES, dependencies=VENDOR_ONLY)
async def list_roles(
    tenant_id: OptionalTenantHeader, vendor: CallerDep, db_session: SessionDep
) -> list[RoleResponse]:
    return [role_response(role) for role in await directory.list_roles(db_session, tenant_id)]


@post(ROLES, dependencies=VENDOR_ONLY, status_code=201)
async def create_roles(
    request: Request[Any, Any, Any],
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    now: NowDep,
) -> list[RoleResponse]:
    data = await read_body(request, AddRolesBody)
    roles = await directory.create_roles(
        db_session, vendor, tenant_id, [item.to_new_role() for item in data], now
    )
    await db_session.commit()
    return [role_response(role) for role in roles]


@patch(ROLE, dependencies=VENDOR_ONLY)
async def update_role(
    request: Request[Any, Any, Any],
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    now: NowDep,
) -> RoleResponse:
    data = await read_body(request, UpdateRoleRequest)
    role = await directory.update_role(
        db_session, vendor, role_id, tenant_id, data.to_change(), now
    )
    await db_session.commit()
    return role_response(role)


@delete(ROLE, dependencies=VENDOR_ONLY)
async def delete_role(
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    now: NowDep,
) -> None:
    await directory.delete_role(db_session, vendor, role_id, tenant_id, now)
    await db_session.commit()


@put(ROLE_PERMISSIONS, dependencies=VENDOR_ONLY)
async def set_role_permissions(
    request: Request[Any, Any, Any],
    role_id: PathId,
    tenant_id: OptionalTenantHeader,
    vendor: CallerDep,
    db_session: SessionDep,
    now: NowDep,
) -> RoleResponse:
    data = await read_body(request, SetRolePermissionsRequest)
    role = await directory.set_role_permissions(
        db_session, vendor, role_id, tenant_id, data.permission_ids, now
    )
    await db_session.commit()
    return role_response(role)


# --- permissions ------------------------------------------------------------------------------


@get(PERMISSIONS, dependencies=VENDOR_ONLY)
async def list_permissions(vendor: CallerDep, db_session: SessionDep) -> list[PermissionResponse]:
    return [permission_response(p) for p in await directory.list_permissions(db_session)]


@post(PERMISSIONS, dependencies=VENDOR_ONLY, status_code=201)
async def create_permissions(
    request: Request[Any, Any, Any], vendor: CallerDep, db_session: SessionDep, now: NowDep
) -> list[PermissionResponse]:
    data = await read_body(request, AddPermissionsBody)
    permissions = await directory.create_permissions(
        db_session, vendor, [item.to_new_permission() for item in data], now
    )
    await db_session.commit()
    return [permission_response(p) for p in permissions]


ROUTES = [
    create_tenant,
    list_tenants,
    get_tenant,
    delete_tenant,
    create_user,
    get_user,
    delete_user,
    assign_roles_to_user,
    list_roles,
    create_roles,
    update_role,
    delete_role,
    set_role_permissions,
    list_permissions,
    create_permissions,
]
