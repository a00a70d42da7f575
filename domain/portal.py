"""The end users' portal: who the signed-in user is in its account, who created the account's
tokens, and the member a dev-mode portal link signs in as."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import VENDOR, Caller
from domain.configuration import get_environment
from domain.directory import (
    NewRole,
    NewUser,
    create_roles,
    create_tenant,
    create_user,
    get_tenant,
    get_user,
    set_role_permissions,
)
from domain.errors import Conflict, Forbidden
from domain.models import AccessToken, ClientCredential, Permission, Role, Tenant, User
from domain.policy import Policy, effective_policy

# The six permissions over tokens: fe.secure.{read,write,delete}.{tenant,user}ApiTokens.
TOKEN_PERMISSION_KEYS = tuple(
    f"fe.secure.{action}.{resource}"
    for resource in ("tenantApiTokens", "userApiTokens")
    for action in ("read", "write", "delete")
)
# The environment-wide role a dev-mode portal link gives a user it creates.
DEV_PORTAL_ROLE_KEY = "api-token-admin"
DEV_PORTAL_ROLE_NAME = "API token admin"


@dataclass(frozen=True)
class HeldRole:
    id: str
    key: str
    name: str


@dataclass(frozen=True)
class PortalSession:
    """The signed-in user as the portal shows it: what it may see, create and delete follows
    `permissions`; a token it creates may carry only `roles`."""

    user_id: str
    tenant_id: str
    email: str
    name: str | None
    tenant_name: str
    roles: list[HeldRole]
    permissions: list[str]
    api_tokens_enabled: bool
    strategy: str  # machineToMachineAuthStrategy: AccessToken or ClientCredentials
    # The account's token policy: the portal offers only the expirations it allows.
    token_policy: Policy


@dataclass(frozen=True)
class Member:
    """A user of the caller's own account, as "Created by" names it."""

    user_id: str
    name: str | None
    email: str


def _end_user(caller: Caller) -> tuple[str, str]:
    """The user and account of an end user's session; the vendor has neither."""
    if caller.is_vendor or caller.user_id is None or caller.tenant_id is None:
        raise Forbidden(
            "The portal serves end users: send the user's session token, not a vendor token"
        )
    return caller.user_id, caller.tenant_id


async def portal_session(session: AsyncSession, caller: Caller) -> PortalSession:
    user_id, tenant_id = _end_user(caller)
    view = await get_user(session, user_id, tenant_id)
    tenant = await get_tenant(session, tenant_id)
    environment = await get_environment(session)
    return PortalSession(
        user_id=view.user.id,
        tenant_id=tenant.id,
        email=view.user.email,
        name=view.user.name,
        tenant_name=tenant.name,
        roles=[HeldRole(r.role.id, r.role.key, r.role.name) for r in view.roles],
        permissions=sorted(caller.permissions),
        api_tokens_enabled=environment.api_tokens_enabled,
        strategy=environment.m2m_strategy,
        token_policy=await effective_policy(session, tenant_id),
    )


async def token_creators(session: AsyncSession, caller: Caller) -> list[Member]:
    """The members of the caller's account who created its account tokens, for a caller who may
    read those tokens. Only this account's users are ever named; a token the vendor created
    names nobody, and a creator since deleted is no longer named."""
    _, tenant_id = _end_user(caller)
    caller.require("fe.secure.read.tenantApiTokens")
    creators = sa.union(
        *(
            sa.select(model.created_by_user_id).where(
                model.tenant_id == tenant_id, model.user_id.is_(None)
            )
            for model in (ClientCredential, AccessToken)
        )
    ).subquery()
    users = await session.scalars(
        sa.select(User)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(
            User.id.in_(sa.select(creators.c[0])),
            User.tenant_id == tenant_id,
            User.deleted_at.is_(None),
            Tenant.deleted_at.is_(None),
        )
        .order_by(User.id)
    )
    return [Member(user_id=user.id, name=user.name, email=user.email) for user in users]


async def dev_portal_member(
    session: AsyncSession, tenant_id: str, email: str, now: datetime
) -> User:
    """The user a dev-mode portal link signs in as: the tenant and the user are created when
    missing, and a new user holds a role with the six token permissions (created when missing).
    A user that exists keeps its roles."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        await create_tenant(session, VENDOR, tenant_id, tenant_id, now)
    elif tenant.deleted_at is not None:
        raise Conflict(f"Tenant {tenant_id} is being deleted; try again in a minute")
    existing: User | None = await session.scalar(
        sa.select(User).where(User.email == email.lower(), User.deleted_at.is_(None))
    )
    if existing is not None:
        if existing.tenant_id != tenant_id:
            raise Conflict(f"{email} is a user of account {existing.tenant_id}, not {tenant_id}")
        return existing
    role = await _dev_portal_role(session, now)
    view, _ = await create_user(
        session, VENDOR, tenant_id, NewUser(email=email, role_ids=[role.id]), now
    )
    return view.user


async def _dev_portal_role(session: AsyncSession, now: datetime) -> Role:
    role: Role | None = await session.scalar(
        sa.select(Role).where(Role.tenant_id.is_(None), Role.key == DEV_PORTAL_ROLE_KEY)
    )
    if role is not None:
        return role
    [view] = await create_roles(
        session,
        VENDOR,
        None,
        [NewRole(key=DEV_PORTAL_ROLE_KEY, name=DEV_PORTAL_ROLE_NAME, level=0)],
        now,
    )
    permission_ids = list(
        await session.scalars(
            sa.select(Permission.id).where(Permission.key.in_(TOKEN_PERMISSION_KEYS))
        )
    )
    await set_role_permissions(session, VENDOR, view.role.id, None, permission_ids, now)
    return view.role
