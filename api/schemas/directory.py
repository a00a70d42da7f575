"""Directory shapes: Frontegg's tenant, user, role and permission requests and responses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from api.schemas.common import (
    MAX_IDS,
    MAX_METADATA_BYTES,
    MAX_NAME,
    Body,
    Id,
    IdList,
    Name,
    Out,
    Text,
    iso,
)
from domain.directory import (
    NewPermission,
    NewRole,
    NewUser,
    PermissionChange,
    PermissionView,
    RoleChange,
    RoleView,
    UserChange,
    UserView,
)
from domain.models import Role, Tenant

MAX_BATCH = 100

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=MAX_NAME, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
RoleLevel = Annotated[int, msgspec.Meta(ge=0, le=32767)]
NonEmptyIdList = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_IDS)]
# Frontegg's user metadata: a JSON object, stringified (domain/directory.py parses it). The
# format names that for the API reference (a JSON Schema pattern cannot).
JSON_OBJECT_FORMAT = "json-object"
StringifiedJson = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_METADATA_BYTES,
        extra_json_schema={"format": JSON_OBJECT_FORMAT, "contentMediaType": "application/json"},
    ),
]


# --- requests ---------------------------------------------------------------------------------


class CreateTenantRequest(Body):
    name: Name
    tenant_id: Id | None = None


class CreateUserRequest(Body):
    """Frontegg's CreateUserDto, less what this service cannot honour (password, expiry)."""

    email: Email
    name: Name | None = None
    role_ids: IdList | None = None
    metadata: StringifiedJson = "{}"
    # Lets the user id equal the `sub` of the vendor's own IdP sessions.
    id: Id | None = None
    # Accepted so that Frontegg client code works; this service sends no email and keeps no
    # profile, so none of these is stored.
    username: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    profile_picture_url: Annotated[str, msgspec.Meta(max_length=4095)] | None = None
    phone_number: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    provider: (
        Literal[
            "local", "saml", "google", "github", "facebook", "microsoft", "scim2", "slack", "apple"
        ]
        | None
    ) = None
    skip_invite_email: bool | None = None
    email_metadata: dict[str, Any] | None = None
    # Declared only to refuse it with a clear message rather than "unknown field" (the API
    # reference says no value is accepted).
    password: Annotated[
        Any, msgspec.Meta(extra_json_schema={"not": {}, "description": "Not accepted."})
    ] = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.password is not msgspec.UNSET:
            raise ValueError("`password` is not accepted: this service keeps no passwords")
        super().__post_init__()

    def to_new_user(self) -> NewUser:
        return NewUser(
            email=self.email,
            name=self.name,
            role_ids=self.role_ids or (),
            metadata=self.metadata,
            user_id=self.id,
        )


class AssignRolesRequest(Body):
    role_ids: NonEmptyIdList


class UnassignRolesRequest(Body):
    """Frontegg's UnassignUserFromRolesDto."""

    role_ids: NonEmptyIdList


class UpdateUserRequest(Body):
    """Frontegg's UpdateVendorUserDto, and `email` beyond it (kept unique across users)."""

    name: Name | None = None
    metadata: StringifiedJson | None = None
    email: Email | None = None
    # Accepted so that Frontegg client code works; this service keeps no profile, phone,
    # MFA or external identity, so none of these is stored.
    phone_number: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    profile_picture_url: Annotated[str, msgspec.Meta(max_length=4095)] | None = None
    vendor_metadata: StringifiedJson | None = None
    mfa_bypass: bool | None = None
    external_id: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None

    def to_change(self) -> UserChange:
        return UserChange(name=self.name, metadata=self.metadata, email=self.email)


class AddRoleRequest(Body):
    key: Name
    name: Name
    level: RoleLevel
    description: Text | None = None
    is_default: bool = False
    first_user_role: bool = False
    migrate_role: bool = False

    def to_new_role(self) -> NewRole:
        return NewRole(
            key=self.key,
            name=self.name,
            level=self.level,
            description=self.description,
            is_default=self.is_default,
            first_user_role=self.first_user_role,
            migrate_role=self.migrate_role,
        )


class UpdateRoleRequest(Body):
    key: Name | None = None
    name: Name | None = None
    description: Text | None = None
    level: RoleLevel | None = None
    is_default: bool | None = None
    first_user_role: bool | None = None
    migrate_role: bool = False

    def to_change(self) -> RoleChange:
        return RoleChange(
            key=self.key,
            name=self.name,
            description=self.description,
            level=self.level,
            is_default=self.is_default,
            first_user_role=self.first_user_role,
            migrate_role=self.migrate_role,
        )


class SetRolePermissionsRequest(Body):
    permission_ids: IdList


class AddPermissionRequest(Body):
    key: Name
    name: Name
    description: Text | None = None
    category_id: Id | None = None
    # Accepted so that Frontegg clients work, and not stored: every permission here can be
    # given through roles, and nothing in this service assigns permissions by itself.
    assignment_type: Literal["NEVER", "ALWAYS", "ASSIGNABLE"] | None = None

    def to_new_permission(self) -> NewPermission:
        return NewPermission(
            key=self.key,
            name=self.name,
            description=self.description,
            category_id=self.category_id,
        )


class UpdatePermissionRequest(Body):
    """Frontegg's UpdatePermissionRequest: which roles hold it is changed elsewhere."""

    key: Name | None = None
    name: Name | None = None
    description: Text | None = None
    category_id: Id | None = None

    def to_change(self) -> PermissionChange:
        return PermissionChange(
            key=self.key,
            name=self.name,
            description=self.description,
            category_id=self.category_id,
        )


# Frontegg takes roles and permissions in batches: a JSON array of 1..MAX_BATCH items.
# A rule across fields, for the API reference (domain/directory.py enforces it).
MIGRATE_ONLY_A_DEFAULT_ROLE = {
    "if": {"properties": {"migrateRole": {"const": True}}, "required": ["migrateRole"]},
    "then": {"properties": {"isDefault": {"const": True}}, "required": ["isDefault"]},
}
AddRolesBody = Annotated[
    list[Annotated[AddRoleRequest, msgspec.Meta(extra_json_schema=MIGRATE_ONLY_A_DEFAULT_ROLE)]],
    msgspec.Meta(min_length=1, max_length=MAX_BATCH),
]
AddPermissionsBody = Annotated[
    list[AddPermissionRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)
]


# --- responses --------------------------------------------------------------------------------


class TenantOut(Out):
    id: str
    tenant_id: str
    name: str
    created_at: str | None
    updated_at: str | None


class RoleOut(Out):
    id: str
    vendor_id: str | None
    tenant_id: str | None
    key: str
    name: str
    description: str | None
    is_default: bool
    first_user_role: bool
    level: int
    created_at: str | None
    updated_at: str | None
    permissions: list[str]


class RoleSummary(Out):
    """Frontegg's IRole."""

    id: str
    key: str
    name: str
    description: str | None
    is_default: bool
    level: int
    created_at: str | None


class PermissionOut(Out):
    id: str
    key: str
    name: str
    description: str | None
    created_at: str | None
    updated_at: str | None
    role_ids: list[str]
    category_id: str | None
    fe_permission: bool


class UserCreatedOut(Out):
    id: str
    email: str
    name: str | None
    verified: bool
    roles: list[str]
    permissions: list[str]
    metadata: str
    created_at: str | None
    tenant_id: str
    activated_for_tenant: bool


class UserTenantOut(Out):
    tenant_id: str
    roles: list[RoleOut]


class UserOut(Out):
    """Frontegg's UserDto: what this service knows, and Frontegg's defaults for the rest."""

    id: str
    email: str
    name: str | None
    sub: str
    tenant_id: str
    tenant_ids: list[str]
    verified: bool
    mfa_enrolled: bool
    provider: str
    roles: list[RoleOut]
    permissions: list[PermissionOut]
    tenants: list[UserTenantOut]
    metadata: str
    created_at: str | None
    last_login: str | None
    profile_picture_url: str | None
    vendor_metadata: str | None
    sub_account_access_allowed: bool
    activated_for_tenant: bool


class AssignedRolesOut(Out):
    """Frontegg's AssignUserToRolesResponseDto and DeleteUserToRolesResponseDto."""

    tenant_id: str
    user_id: str
    roles: list[RoleSummary]


def tenant_response(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=tenant.id,
        tenant_id=tenant.id,
        name=tenant.name,
        created_at=iso(tenant.created_at),
        updated_at=iso(tenant.updated_at),
    )


def role_response(view: RoleView) -> RoleOut:
    role = view.role
    return RoleOut(
        id=role.id,
        vendor_id=None,
        tenant_id=role.tenant_id,
        key=role.key,
        name=role.name,
        description=role.description,
        is_default=role.is_default,
        first_user_role=role.first_user_role,
        level=role.level,
        created_at=iso(role.created_at),
        updated_at=iso(role.updated_at),
        permissions=view.permission_ids,
    )


def role_summary(role: Role) -> RoleSummary:
    return RoleSummary(
        id=role.id,
        key=role.key,
        name=role.name,
        description=role.description,
        is_default=role.is_default,
        level=role.level,
        created_at=iso(role.created_at),
    )


def permission_response(view: PermissionView) -> PermissionOut:
    permission = view.permission
    return PermissionOut(
        id=permission.id,
        key=permission.key,
        name=permission.name,
        description=permission.description,
        created_at=iso(permission.created_at),
        updated_at=iso(permission.updated_at),
        role_ids=view.role_ids,
        category_id=permission.category_id,
        fe_permission=permission.fe_permission,
    )


def user_created_response(view: UserView) -> UserCreatedOut:
    user = view.user
    return UserCreatedOut(
        id=user.id,
        email=user.email,
        name=user.name,
        verified=False,
        roles=[role.role.key for role in view.roles],
        permissions=[permission.permission.key for permission in view.permissions],
        metadata=user.metadata_json,
        created_at=iso(user.created_at),
        tenant_id=user.tenant_id,
        activated_for_tenant=True,
    )


def user_response(view: UserView) -> UserOut:
    user = view.user
    roles = [role_response(role) for role in view.roles]
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        sub=user.id,
        tenant_id=user.tenant_id,
        tenant_ids=[user.tenant_id],
        verified=False,
        mfa_enrolled=False,
        provider="local",
        roles=roles,
        permissions=[permission_response(permission) for permission in view.permissions],
        tenants=[UserTenantOut(tenant_id=user.tenant_id, roles=roles)],
        metadata=user.metadata_json,
        created_at=iso(user.created_at),
        last_login=None,
        profile_picture_url=None,
        vendor_metadata=None,
        sub_account_access_allowed=False,
        activated_for_tenant=True,
    )
