"""Factories that build the directory straight in the database, for tests to start from."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.clock import utcnow
from domain.models import Permission, Role, Tenant, User, role_permissions, user_roles


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
    ) -> Role:
        now = utcnow()
        key = key or f"role-{uuid.uuid4().hex[:8]}"
        role = Role(
            id=_id(),
            tenant_id=tenant_id,
            key=key,
            name=key.title(),
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
    ) -> User:
        now = utcnow()
        user_id = user_id or _id()
        user = User(
            id=user_id,
            tenant_id=tenant_id,
            email=email or f"{user_id}@example.test",
            name="Test User",
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
