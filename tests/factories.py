"""Factories that build rows straight in the database, for tests to start from (the directory,
tokens and refresh tokens), and the look-ups that read stored rows back."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.clock import utcnow
from domain.models import (
    AccessToken,
    ClientCredential,
    Permission,
    RefreshToken,
    Role,
    Tenant,
    User,
    role_permissions,
    user_roles,
)
from tests.kinds import TOKEN_PERMISSIONS, Kind

if TYPE_CHECKING:
    from tests.steps import Credential

READ = "fe.secure.read.tenantApiTokens"
WRITE = "fe.secure.write.tenantApiTokens"


def _id() -> str:
    return str(uuid.uuid4())


class Factory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def tenant(self, tenant_id: str | None = None, name: str = "Acme") -> Tenant:
        now = utcnow()
        tenant = Tenant(id=tenant_id or _id(), name=name, created_at=now, updated_at=now)
        async with self._sessions() as session:
            session.add(tenant)
            await session.commit()
        return tenant

    async def permission(self, key: str | None = None) -> Permission:
        now = utcnow()
        key = key or f"perm.{uuid.uuid4().hex[:8]}"
        permission = Permission(
            id=_id(),
            key=key,
            name=key,
            description=None,
            category_id=None,
            fe_permission=False,
            created_at=now,
            updated_at=now,
        )
        async with self._sessions() as session:
            session.add(permission)
            await session.commit()
        return permission

    async def permission_ids(self, keys: Iterable[str]) -> list[str]:
        async with self._sessions() as session:
            rows = await session.scalars(sa.select(Permission.id).where(Permission.key.in_(keys)))
            return list(rows)

    async def role(
        self,
        key: str | None = None,
        *,
        tenant_id: str | None = None,
        permission_keys: Iterable[str] = (),
        name: str | None = None,
    ) -> Role:
        now = utcnow()
        key = key or f"role-{uuid.uuid4().hex[:8]}"
        role = Role(
            id=_id(),
            tenant_id=tenant_id,
            key=key,
            name=name or key.title(),
            description=None,
            is_default=False,
            first_user_role=False,
            level=0,
            created_at=now,
            updated_at=now,
        )
        async with self._sessions() as session:
            session.add(role)
            await session.flush()
            keys = list(permission_keys)
            if keys:
                ids = await session.scalars(
                    sa.select(Permission.id).where(Permission.key.in_(keys))
                )
                found = list(ids)
                assert len(found) == len(set(keys)), f"unknown permission keys in {keys}"
                await session.execute(
                    sa.insert(role_permissions),
                    [{"role_id": role.id, "permission_id": pid} for pid in found],
                )
            await session.commit()
        return role

    async def user(
        self,
        tenant_id: str,
        *,
        user_id: str | None = None,
        email: str | None = None,
        roles: Iterable[Role] = (),
        name: str = "Test User",
    ) -> User:
        now = utcnow()
        user_id = user_id or _id()
        user = User(
            id=user_id,
            tenant_id=tenant_id,
            email=email or f"{user_id}@example.test",
            name=name,
            metadata_json="{}",
            created_at=now,
            updated_at=now,
        )
        async with self._sessions() as session:
            session.add(user)
            await session.flush()
            role_list = list(roles)
            if role_list:
                await session.execute(
                    sa.insert(user_roles),
                    [
                        {"user_id": user.id, "tenant_id": tenant_id, "role_id": role.id}
                        for role in role_list
                    ],
                )
            await session.commit()
        return user


# --- scenes: the directory a group of tests starts from ---------------------------------------


@dataclass
class World:
    """Two tenants, an admin holding every token permission in each, and a bystander."""

    tenant: Tenant
    admin_role: Role
    admin: User
    colleague: User
    other_tenant: Tenant
    stranger: User


async def build_world(factory: Factory) -> World:
    tenant = await factory.tenant()
    other_tenant = await factory.tenant(name="Other")
    admin_role = await factory.role(tenant_id=tenant.id, permission_keys=TOKEN_PERMISSIONS)
    other_role = await factory.role(tenant_id=other_tenant.id, permission_keys=TOKEN_PERMISSIONS)
    return World(
        tenant=tenant,
        admin_role=admin_role,
        admin=await factory.user(tenant.id, roles=[admin_role]),
        colleague=await factory.user(tenant.id, roles=[admin_role]),
        other_tenant=other_tenant,
        stranger=await factory.user(other_tenant.id, roles=[other_role]),
    )


@dataclass
class Scene:
    """A tenant with a reader and a user holding it, and a second tenant with its own user."""

    tenant: Tenant
    reader: Role
    writer: Role
    user: User
    other_tenant: Tenant
    other_user: User


async def build_scene(factory: Factory) -> Scene:
    tenant = await factory.tenant()
    other_tenant = await factory.tenant(name="Other")
    reader = await factory.role("reader", tenant_id=tenant.id, permission_keys=[READ])
    writer = await factory.role("writer", tenant_id=tenant.id, permission_keys=[WRITE])
    other_reader = await factory.role("reader", tenant_id=other_tenant.id, permission_keys=[READ])
    return Scene(
        tenant=tenant,
        reader=reader,
        writer=writer,
        user=await factory.user(tenant.id, roles=[reader]),
        other_tenant=other_tenant,
        other_user=await factory.user(other_tenant.id, roles=[other_reader]),
    )


# --- tokens and refresh tokens, straight in the database --------------------------------------


async def add_credential(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    user_id: str | None = None,
    expires_at: datetime | None = None,
) -> str:
    client_id = str(uuid.uuid4())
    now = utcnow()
    async with sessions() as session:
        session.add(
            ClientCredential(
                client_id=client_id,
                tenant_id=tenant_id,
                user_id=user_id,
                metadata_json={},
                secret_hash="unused",
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
        )
        await session.commit()
    return client_id


async def add_access_token(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    user_id: str | None = None,
    expires_at: datetime | None = None,
    created_at: datetime | None = None,
) -> str:
    token_id = str(uuid.uuid4())
    async with sessions() as session:
        session.add(
            AccessToken(
                id=token_id,
                tenant_id=tenant_id,
                user_id=user_id,
                expires_at=expires_at,
                created_at=created_at or utcnow(),
            )
        )
        await session.commit()
    return token_id


async def add_refresh_tokens(
    sessions: async_sessionmaker[AsyncSession],
    client_id: str,
    count: int,
    *,
    start: datetime | None = None,
    used: bool = False,
    revoked: bool = False,
    lifetime: timedelta = timedelta(days=30),
    family_id: str | None = None,
) -> list[str]:
    """`count` refresh tokens, one second apart from `start` (oldest first); their ids."""
    start = start or utcnow() - timedelta(hours=1)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    async with sessions() as session:
        for offset, token_id in enumerate(ids):
            created = start + timedelta(seconds=offset)
            session.add(
                RefreshToken(
                    id=token_id,
                    client_id=client_id,
                    token_hash=hashlib.sha256(token_id.encode()).hexdigest(),
                    parent_id=None,
                    family_id=family_id or token_id,
                    created_at=created,
                    expires_at=created + lifetime,
                    used_at=created if used else None,
                    revoked_at=created if revoked else None,
                )
            )
        await session.commit()
    return ids


async def cheapen_secret(db: AsyncSession, credential: Credential) -> None:
    """Store the same secret under the cheapest argon2id parameters.

    For tests that exchange hundreds of times and are about refresh tokens, not argon2.
    """
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
    await db.execute(
        sa.update(ClientCredential)
        .where(ClientCredential.client_id == credential.client_id)
        .values(secret_hash=cheap.hash(credential.secret))
    )
    await db.commit()


async def mark_deleted(db: AsyncSession, model: type[Tenant] | type[User], row_id: str) -> None:
    """What a deletion does first: deleted_at set; its rows go later, in a background job."""
    await db.execute(
        sa.update(model).where(model.id == row_id).values(deleted_at=datetime.now(UTC))
    )
    await db.commit()


# --- reading stored rows back -----------------------------------------------------------------


async def stored(db: AsyncSession, kind: Kind) -> list[Any]:
    db.expire_all()
    return list(await db.scalars(sa.select(kind.model)))


async def refresh_rows(db: AsyncSession, client_id: str | None = None) -> list[RefreshToken]:
    db.expire_all()
    statement = sa.select(RefreshToken).order_by(RefreshToken.created_at, RefreshToken.id)
    if client_id is not None:
        statement = statement.where(RefreshToken.client_id == client_id)
    return list(await db.scalars(statement))


def is_usable(row: RefreshToken, now: datetime) -> bool:
    return row.used_at is None and row.revoked_at is None and row.expires_at > now
