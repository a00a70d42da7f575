"""Who may grant what: the roles and permissions a token may be given, and what a user holds.

A user can only give a token roles and permissions that the user holds in the account; the
vendor can give any role of the account (or of the whole environment) and any permission.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.directory import assignable_roles, existing_permissions, live_user
from domain.errors import Forbidden, InvalidInput
from domain.models import Permission, Role, User, role_permissions, user_roles


@dataclass(frozen=True)
class Grant:
    """The roles and permissions a token is about to be given."""

    roles: list[Role]
    permissions: list[Permission]


async def permissions_of(
    session: AsyncSession, user_id: str, tenant_id: str
) -> frozenset[str] | None:
    """Permission keys the user holds in the tenant through its roles; None if not a member."""
    member = await session.scalar(
        live_user(user_id).with_only_columns(User.id).where(User.tenant_id == tenant_id)
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


async def permission_ids_of_roles(session: AsyncSession, role_ids: Collection[str]) -> set[str]:
    """Ids of the permissions that any of these roles carries."""
    if not role_ids:
        return set()
    return set(
        await session.scalars(
            sa.select(role_permissions.c.permission_id).where(
                role_permissions.c.role_id.in_(role_ids)
            )
        )
    )


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
        held_permissions = await permission_ids_of_roles(session, held_roles)
        missing = sorted(p.id for p in permissions if p.id not in held_permissions)
        if missing:
            raise Forbidden(f"You cannot grant permissions you do not hold: {', '.join(missing)}")


async def credential_grant(
    session: AsyncSession,
    tenant_id: str,
    acting_user_id: str | None,
    role_ids: Collection[str],
    permission_ids: Collection[str],
) -> Grant:
    """What a tenant credential is given: roleIds override permissionIds (Frontegg's rule)."""
    if role_ids:
        grant = Grant(roles=await assignable_roles(session, tenant_id, role_ids), permissions=[])
    elif permission_ids:
        grant = Grant(roles=[], permissions=await existing_permissions(session, permission_ids))
    else:
        raise InvalidInput("Either roleIds or permissionIds must be given")
    await _require_acting_user_holds(session, tenant_id, acting_user_id, grant)
    return grant


async def access_token_grant(
    session: AsyncSession, tenant_id: str, acting_user_id: str | None, role_ids: Collection[str]
) -> Grant:
    """What a tenant access token is given: roles only."""
    grant = Grant(roles=await assignable_roles(session, tenant_id, role_ids), permissions=[])
    await _require_acting_user_holds(session, tenant_id, acting_user_id, grant)
    return grant


async def _require_acting_user_holds(
    session: AsyncSession, tenant_id: str, acting_user_id: str | None, grant: Grant
) -> None:
    """A user (an end user, or one the vendor names) only gives a token what the user holds."""
    if acting_user_id is None:
        return
    await require_grantable(session, acting_user_id, tenant_id, grant.roles, grant.permissions)
