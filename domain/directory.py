"""Tenants, users, roles and permissions: the directory that gives tokens their roles."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Forbidden, InvalidInput, NotFound
from domain.models import Permission, Role, Tenant, User, role_permissions, user_roles

# --- lookups shared with tokens and authentication -------------------------------------------


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"Tenant {tenant_id} not found")
    return tenant


async def get_user_in_tenant(session: AsyncSession, user_id: str, tenant_id: str) -> User:
    """The user, if it belongs to the tenant; another tenant's user is unknown here."""
    user = await session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"User {user_id} not found")
    return user


async def permissions_of(
    session: AsyncSession, user_id: str, tenant_id: str
) -> frozenset[str] | None:
    """Permission keys the user holds in the tenant through its roles; None if not a member."""
    member = await session.scalar(
        sa.select(User.id).where(User.id == user_id, User.tenant_id == tenant_id)
    )
    if member is None:
        return None
    keys = await session.scalars(
        sa.select(Permission.key)
        .join(role_permissions, role_permissions.c.permission_id == Permission.id)
        .join(user_roles, user_roles.c.role_id == role_permissions.c.role_id)
        .where(user_roles.c.user_id == user_id, user_roles.c.tenant_id == tenant_id)
        .distinct()
    )
    return frozenset(keys)


async def assignable_roles(
    session: AsyncSession, tenant_id: str, role_ids: Collection[str]
) -> list[Role]:
    """The roles named, each environment-wide or of this tenant; any other id is refused."""
    wanted = set(role_ids)
    if not wanted:
        return []
    roles = list(
        await session.scalars(
            sa.select(Role).where(
                Role.id.in_(wanted), sa.or_(Role.tenant_id.is_(None), Role.tenant_id == tenant_id)
            )
        )
    )
    unknown = wanted - {role.id for role in roles}
    if unknown:
        raise InvalidInput(f"Unknown role ids: {', '.join(sorted(unknown))}")
    return sorted(roles, key=lambda role: role.id)


async def existing_permissions(
    session: AsyncSession, permission_ids: Collection[str]
) -> list[Permission]:
    wanted = set(permission_ids)
    if not wanted:
        return []
    permissions = list(
        await session.scalars(sa.select(Permission).where(Permission.id.in_(wanted)))
    )
    unknown = wanted - {permission.id for permission in permissions}
    if unknown:
        raise InvalidInput(f"Unknown permission ids: {', '.join(sorted(unknown))}")
    return sorted(permissions, key=lambda permission: permission.id)


async def require_grantable(
    session: AsyncSession,
    granter_user_id: str,
    tenant_id: str,
    roles: Collection[Role],
    permissions: Collection[Permission],
) -> None:
    """A user can only give a token roles and permissions that the user holds."""
    if not roles and not permissions:
        return
    held_roles = set(
        await session.scalars(
            sa.select(user_roles.c.role_id).where(
                user_roles.c.user_id == granter_user_id, user_roles.c.tenant_id == tenant_id
            )
        )
    )
    missing_roles = sorted(role.id for role in roles if role.id not in held_roles)
    if missing_roles:
        raise Forbidden(f"You cannot grant roles you do not hold: {', '.join(missing_roles)}")
    if permissions:
        held_permissions = set(
            await session.scalars(
                sa.select(role_permissions.c.permission_id).where(
                    role_permissions.c.role_id.in_(held_roles)
                )
            )
        )
        missing = sorted(p.id for p in permissions if p.id not in held_permissions)
        if missing:
            raise Forbidden(f"You cannot grant permissions you do not hold: {', '.join(missing)}")
