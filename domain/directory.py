"""Tenants, users, roles and permissions: the directory that gives tokens their roles."""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.auth import Caller
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.jobs import CASCADE_DELETIONS
from domain.models import Permission, Role, Tenant, User, role_permissions, user_roles

# --- lookups shared with tokens, grants and authentication ---------------------------------


async def get_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    """The tenant; one being deleted is unknown already."""
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None or tenant.deleted_at is not None:
        raise NotFound(f"Tenant {tenant_id} not found")
    return tenant


def live_user(user_id: str) -> sa.Select[Any]:
    """The user, unless it or its tenant is deleted (their cascade may still be running)."""
    return (
        sa.select(User)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(User.id == user_id, User.deleted_at.is_(None), Tenant.deleted_at.is_(None))
    )


async def get_user_in_tenant(session: AsyncSession, user_id: str, tenant_id: str) -> User:
    """The user, if it belongs to the tenant; another tenant's user is unknown here."""
    user: User | None = await session.scalar(live_user(user_id))
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"User {user_id} not found")
    return user


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


# --- views: a row with the ids Frontegg's responses list beside it ---------------------------


@dataclass(frozen=True)
class RoleView:
    role: Role
    permission_ids: list[str]


@dataclass(frozen=True)
class PermissionView:
    permission: Permission
    role_ids: list[str]


@dataclass(frozen=True)
class UserView:
    user: User
    roles: list[RoleView]
    permissions: list[PermissionView]


async def _role_views(
    session: AsyncSession, roles: Sequence[Role], of: sa.ColumnElement[bool] | None = None
) -> list[RoleView]:
    """The roles with their permission ids; `of` selects the same roles as the caller's query.

    A whole listing passes its own filter rather than every id, which could exceed the
    number of parameters one statement may carry.
    """
    if not roles:
        return []
    rows = await session.execute(
        sa.select(role_permissions.c.role_id, role_permissions.c.permission_id)
        .join(Role, Role.id == role_permissions.c.role_id)
        .where(Role.id.in_([role.id for role in roles]) if of is None else of)
        .order_by(role_permissions.c.permission_id)
    )
    by_role: dict[str, list[str]] = defaultdict(list)
    for role_id, permission_id in rows:
        by_role[role_id].append(permission_id)
    return [RoleView(role, by_role[role.id]) for role in roles]


async def _permission_views(
    session: AsyncSession, permissions: Sequence[Permission], *, all_of_them: bool = False
) -> list[PermissionView]:
    """The permissions with the ids of the roles that hold them."""
    if not permissions:
        return []
    query = sa.select(role_permissions.c.permission_id, role_permissions.c.role_id).order_by(
        role_permissions.c.role_id
    )
    if not all_of_them:
        query = query.where(role_permissions.c.permission_id.in_([p.id for p in permissions]))
    by_permission: dict[str, list[str]] = defaultdict(list)
    for permission_id, role_id in await session.execute(query):
        by_permission[permission_id].append(role_id)
    return [PermissionView(p, by_permission[p.id]) for p in permissions]


async def _flush_or_conflict(session: AsyncSession, message: str) -> None:
    """Flush; a unique key taken meanwhile by a concurrent request is a conflict, not a 500."""
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(message) from None


def _require_distinct_keys(kind: str, keys: Sequence[str]) -> None:
    """A batch that names one key twice would clash with itself: refused whole."""
    repeated = sorted(key for key, count in Counter(keys).items() if count > 1)
    if repeated:
        raise Conflict(f"{kind} keys repeated in the request: {', '.join(repeated)}")


def _apply_given(row: object, values: Mapping[str, object]) -> list[str]:
    """Set the fields of a change that were given (not None) and differ; their names, in order."""
    changed = []
    for field, value in values.items():
        if value is not None and value != getattr(row, field):
            setattr(row, field, value)
            changed.append(field)
    return changed


def _new_id() -> str:
    return str(uuid.uuid4())


# --- tenants ----------------------------------------------------------------------------------


async def create_tenant(
    session: AsyncSession, caller: Caller, tenant_id: str | None, name: str, now: datetime
) -> tuple[Tenant, AfterCommit]:
    """A new tenant. Its id may have belonged to a deleted tenant, whose tombstone in the
    validity cache would only slow this one down: it is forgotten after the commit."""
    tenant_id = tenant_id or _new_id()
    taken = f"Tenant {tenant_id} already exists"
    existing = await session.get(Tenant, tenant_id)
    if existing is not None:
        if existing.deleted_at is not None:
            raise Conflict(f"Tenant {tenant_id} is being deleted; try again in a minute")
        raise Conflict(taken)
    tenant = Tenant(id=tenant_id, name=name, created_at=now, updated_at=now)
    session.add(tenant)
    audit.record(
        session,
        caller,
        "tenant.created",
        target_type="tenant",
        target_id=tenant.id,
        tenant_id=tenant.id,
        now=now,
        details={"name": name},
    )
    await _flush_or_conflict(session, taken)
    return tenant, AfterCommit().recreate_tenant(tenant.id)


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    return list(
        await session.scalars(
            sa.select(Tenant)
            .where(Tenant.deleted_at.is_(None))
            .order_by(Tenant.created_at, Tenant.id)
        )
    )


async def delete_tenant(
    session: AsyncSession, caller: Caller, tenant_id: str, now: datetime
) -> AfterCommit:
    """Mark the tenant deleted: from this commit on it, its users and every token in it are
    gone for every reader; the cascade job then deletes the rows in batches.

    After the commit, the validity cache's tombstone (naming the tenant's creation instant, which
    tells it apart from a later tenant of the same id) makes every token in it invalid at once.
    """
    # The tombstone names the generation of its tokens: its creation, or its last revoke-all.
    generation: datetime | None = await session.scalar(
        sa.update(Tenant)
        .where(Tenant.id == tenant_id, Tenant.deleted_at.is_(None))
        .values(deleted_at=now)
        .returning(sa.func.coalesce(Tenant.tokens_revoked_at, Tenant.created_at))
    )
    if generation is None:
        raise NotFound(f"Tenant {tenant_id} not found")
    audit.record(
        session,
        caller,
        "tenant.deleted",
        target_type="tenant",
        target_id=tenant_id,
        tenant_id=tenant_id,
        now=now,
    )
    events.announce(
        session, events.TOKENS_REVOKED, {"tenantId": tenant_id, "reason": "tenant.deleted"}, now
    )
    await session.flush()
    return (
        AfterCommit()
        .delete_tenant(tenant_id, generation)
        .enqueue(CASCADE_DELETIONS, tenant_id=tenant_id)
    )


# --- users ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewUser:
    email: str
    name: str | None = None
    # Empty means "the defaults": Frontegg gives default roles to users added without roles.
    role_ids: Sequence[str] = ()
    metadata: str = "{}"
    user_id: str | None = None


def _require_json_object(metadata: str) -> None:
    """Frontegg keeps user metadata as a stringified JSON object: it must parse to one."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        parsed = json.loads(metadata, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("metadata must be a stringified JSON object") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("metadata must be a stringified JSON object")


async def _lock_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    # The lock serializes user creation per tenant, so only one user can be its first.
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None or tenant.deleted_at is not None:
        raise NotFound(f"Tenant {tenant_id} not found")
    return tenant


async def _roles_for_new_user(session: AsyncSession, tenant_id: str) -> list[Role]:
    """The default roles of the environment and tenant, and first-user roles for the first."""
    is_first = (
        await session.scalar(
            sa.select(User.id)
            .where(User.tenant_id == tenant_id, User.deleted_at.is_(None))
            .limit(1)
        )
    ) is None
    wanted: sa.ColumnElement[bool] = Role.is_default.is_(True)
    if is_first:
        wanted = sa.or_(wanted, Role.first_user_role.is_(True))
    return list(
        await session.scalars(
            sa.select(Role)
            .where(sa.or_(Role.tenant_id.is_(None), Role.tenant_id == tenant_id), wanted)
            .order_by(Role.id)
        )
    )


async def _roles_held(session: AsyncSession, user_id: str, tenant_id: str) -> list[Role]:
    return list(
        await session.scalars(
            sa.select(Role)
            .join(user_roles, user_roles.c.role_id == Role.id)
            .where(user_roles.c.user_id == user_id, user_roles.c.tenant_id == tenant_id)
            .order_by(Role.key, Role.id)
        )
    )


async def _insert_user_roles(
    session: AsyncSession, user_id: str, tenant_id: str, role_ids: Sequence[str]
) -> None:
    if not role_ids:
        return
    try:
        await session.execute(
            sa.insert(user_roles),
            [{"user_id": user_id, "tenant_id": tenant_id, "role_id": rid} for rid in role_ids],
        )
    except IntegrityError:  # a role deleted by a concurrent request since we read it
        raise Conflict("A role was changed meanwhile; try again") from None


async def _user_view(session: AsyncSession, user: User) -> UserView:
    roles = await _role_views(session, await _roles_held(session, user.id, user.tenant_id))
    permission_ids = {pid for view in roles for pid in view.permission_ids}
    permissions: list[Permission] = []
    if permission_ids:
        permissions = list(
            await session.scalars(
                sa.select(Permission)
                .where(Permission.id.in_(permission_ids))
                .order_by(Permission.key)
            )
        )
    return UserView(user, roles, await _permission_views(session, permissions))


async def create_user(
    session: AsyncSession, caller: Caller, tenant_id: str, new: NewUser, now: datetime
) -> tuple[UserView, AfterCommit]:
    """A new user. Its id may have belonged to a deleted user, whose tombstone in the validity
    cache would only slow this one down: it is forgotten after the commit."""
    _require_json_object(new.metadata)
    await _lock_tenant(session, tenant_id)
    # Emails identify people whatever their case, as in Frontegg.
    email = new.email.lower()
    user_id = new.user_id or _new_id()
    clash = (
        await session.execute(
            sa.select(User.id, User.email, User.deleted_at)
            .where(sa.or_(User.id == user_id, User.email == email))
            .limit(1)
        )
    ).first()
    if clash is not None:
        field = "id" if clash.id == user_id else "email"
        if clash.deleted_at is not None:
            raise Conflict(f"A user with this {field} is being deleted; try again in a minute")
        raise Conflict(f"A user with this {field} already exists")
    if new.role_ids:
        roles = await assignable_roles(session, tenant_id, new.role_ids)
    else:
        roles = await _roles_for_new_user(session, tenant_id)
    user = User(
        id=user_id,
        tenant_id=tenant_id,
        email=email,
        name=new.name,
        metadata_json=new.metadata,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await _flush_or_conflict(session, "A user with this id or email already exists")
    await _insert_user_roles(session, user.id, tenant_id, [role.id for role in roles])
    audit.record(
        session,
        caller,
        "user.created",
        target_type="user",
        target_id=user.id,
        tenant_id=tenant_id,
        now=now,
        details={"roleIds": [role.id for role in roles]},
    )
    await session.flush()
    return await _user_view(session, user), AfterCommit().recreate_user(user.id)


async def _find_user(session: AsyncSession, user_id: str, tenant_id: str | None) -> User:
    """The user; with a tenant named, only if it belongs to that tenant."""
    if tenant_id is not None:
        return await get_user_in_tenant(session, user_id, tenant_id)
    user: User | None = await session.scalar(live_user(user_id))
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


async def get_user(session: AsyncSession, user_id: str, tenant_id: str | None) -> UserView:
    return await _user_view(session, await _find_user(session, user_id, tenant_id))


async def delete_user(
    session: AsyncSession, caller: Caller | None, user_id: str, tenant_id: str | None, now: datetime
) -> AfterCommit:
    """Mark the user deleted: from this commit on it and every token, credential and refresh
    token of it are gone for every reader; the cascade job then deletes the rows in batches.

    After the commit, the validity cache's tombstone (naming the user's creation instant, which
    tells it apart from a later user of the same id) makes every token of it invalid at once.
    """
    user = await _find_user(session, user_id, tenant_id)
    # The tombstone names the generation of its tokens: its creation, or its last revoke-all.
    generation: datetime | None = await session.scalar(
        sa.update(User)
        .where(User.id == user.id, User.deleted_at.is_(None))
        .values(deleted_at=now)
        .returning(sa.func.coalesce(User.tokens_revoked_at, User.created_at))
    )
    if generation is None:  # deleted by a concurrent request since we read it
        raise NotFound(f"User {user_id} not found")
    audit.record(
        session,
        caller,
        "user.deleted",
        target_type="user",
        target_id=user_id,
        tenant_id=user.tenant_id,
        now=now,
    )
    events.announce(
        session,
        events.TOKENS_REVOKED,
        {"tenantId": user.tenant_id, "userId": user_id, "reason": "user.deleted"},
        now,
    )
    await session.flush()
    return (
        AfterCommit().delete_user(user_id, generation).enqueue(CASCADE_DELETIONS, user_id=user_id)
    )


async def _lock_member(session: AsyncSession, user_id: str, tenant_id: str) -> User:
    """The tenant's live user, its row locked: two concurrent changes of its roles take turns,
    so that none is lost or inserted twice."""
    await get_tenant(session, tenant_id)
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or user.tenant_id != tenant_id or user.deleted_at is not None:
        raise NotFound(f"User {user_id} not found")
    return user


async def assign_roles(
    session: AsyncSession,
    caller: Caller,
    user_id: str,
    tenant_id: str,
    role_ids: Collection[str],
    now: datetime,
) -> list[Role]:
    """Give the user these roles in the tenant; a role already held stays as it is.

    Returns every role the user now holds there.
    """
    await _lock_member(session, user_id, tenant_id)
    roles = await assignable_roles(session, tenant_id, role_ids)
    held = set(
        await session.scalars(
            sa.select(user_roles.c.role_id).where(
                user_roles.c.user_id == user_id, user_roles.c.tenant_id == tenant_id
            )
        )
    )
    added = [role.id for role in roles if role.id not in held]
    if added:
        await _insert_user_roles(session, user_id, tenant_id, added)
        audit.record(
            session,
            caller,
            "user.roles_assigned",
            target_type="user",
            target_id=user_id,
            tenant_id=tenant_id,
            now=now,
            details={"roleIds": added},
        )
        await session.flush()
    return await _roles_held(session, user_id, tenant_id)


async def unassign_roles(
    session: AsyncSession,
    caller: Caller,
    user_id: str,
    tenant_id: str,
    role_ids: Collection[str],
    now: datetime,
) -> list[Role]:
    """Take these roles from the user in the tenant; a role not held is left as it is.

    The user's tokens carry the roles it holds now: its access tokens stop presenting the
    roles within the validity cache's bound on the staleness of roles (README, "Validity
    cache") and its client credentials' next exchange leaves them out. Tenant tokens the user
    created keep their own grants. Returns every role the user still holds there.
    """
    await _lock_member(session, user_id, tenant_id)
    roles = await assignable_roles(session, tenant_id, role_ids)
    removed = list(
        await session.scalars(
            sa.delete(user_roles)
            .where(
                user_roles.c.user_id == user_id,
                user_roles.c.tenant_id == tenant_id,
                user_roles.c.role_id.in_([role.id for role in roles]),
            )
            .returning(user_roles.c.role_id)
        )
    )
    if removed:
        audit.record(
            session,
            caller,
            "user.roles_unassigned",
            target_type="user",
            target_id=user_id,
            tenant_id=tenant_id,
            now=now,
            details={"roleIds": sorted(removed)},
        )
        await session.flush()
    return await _roles_held(session, user_id, tenant_id)


@dataclass(frozen=True)
class UserChange:
    """Fields to change; None leaves a field as it is."""

    name: str | None = None
    metadata: str | None = None
    email: str | None = None


async def update_user(
    session: AsyncSession,
    caller: Caller,
    user_id: str,
    tenant_id: str | None,
    change: UserChange,
    now: datetime,
) -> UserView:
    """Change the user's name, metadata or email; an email stays unique across users."""
    if change.metadata is not None:
        _require_json_object(change.metadata)
    user = await _find_user(session, user_id, tenant_id)
    await session.refresh(user, with_for_update=True)
    email = None if change.email is None else change.email.lower()
    taken = "A user with this email already exists"
    if email is not None and email != user.email:
        clash = (
            await session.execute(
                sa.select(User.id, User.deleted_at).where(User.email == email).limit(1)
            )
        ).first()
        if clash is not None:
            if clash.deleted_at is not None:
                raise Conflict("A user with this email is being deleted; try again in a minute")
            raise Conflict(taken)
    given = {"name": change.name, "metadata_json": change.metadata, "email": email}
    changed = [
        "metadata" if field == "metadata_json" else field for field in _apply_given(user, given)
    ]
    if changed:
        user.updated_at = now
        await _flush_or_conflict(session, taken)
        audit.record(
            session,
            caller,
            "user.updated",
            target_type="user",
            target_id=user.id,
            tenant_id=user.tenant_id,
            now=now,
            details={"changed": changed},
        )
        await session.flush()
    return await _user_view(session, user)


# --- roles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRole:
    key: str
    name: str
    level: int
    description: str | None = None
    is_default: bool = False
    first_user_role: bool = False
    migrate_role: bool = False


@dataclass(frozen=True)
class RoleChange:
    """Fields to change; None leaves a field as it is."""

    key: str | None = None
    name: str | None = None
    description: str | None = None
    level: int | None = None
    is_default: bool | None = None
    first_user_role: bool | None = None
    migrate_role: bool = False


ROLE_FIELDS = ("key", "name", "description", "level", "is_default", "first_user_role")


def _in_scope(tenant_id: str | None) -> sa.ColumnElement[bool]:
    """Roles of one scope: environment-wide when tenant_id is None, else the tenant's own."""
    return Role.tenant_id.is_(None) if tenant_id is None else Role.tenant_id == tenant_id


def _require_default_to_migrate(migrate_role: bool, is_default: bool) -> None:
    if migrate_role and not is_default:
        raise InvalidInput("migrateRole applies only to a default role: set isDefault to true")


async def _migrate_default_role(session: AsyncSession, role: Role) -> int:
    """Give a default role to every existing user of its scope that lacks it; how many got it."""
    users = sa.select(User.id, User.tenant_id, sa.literal(role.id, sa.String)).where(
        ~sa.exists().where(
            user_roles.c.user_id == User.id,
            user_roles.c.tenant_id == User.tenant_id,
            user_roles.c.role_id == role.id,
        )
    )
    if role.tenant_id is not None:
        users = users.where(User.tenant_id == role.tenant_id)
    try:
        result = cast(
            CursorResult[Any],
            await session.execute(
                sa.insert(user_roles).from_select(["user_id", "tenant_id", "role_id"], users)
            ),
        )
    except IntegrityError:
        # A user deleted, or given the role, by a concurrent request since the select.
        raise Conflict("Users of this role changed meanwhile; try again") from None
    return int(result.rowcount)


async def list_roles(session: AsyncSession, tenant_id: str | None) -> list[RoleView]:
    """With a tenant, the environment-wide roles and that tenant's; without, every role."""
    visible: sa.ColumnElement[bool] = sa.true()
    if tenant_id is not None:
        await get_tenant(session, tenant_id)
        visible = sa.or_(Role.tenant_id.is_(None), Role.tenant_id == tenant_id)
    roles = list(await session.scalars(sa.select(Role).where(visible).order_by(Role.key, Role.id)))
    return await _role_views(session, roles, of=visible)


async def create_roles(
    session: AsyncSession,
    caller: Caller,
    tenant_id: str | None,
    new_roles: Sequence[NewRole],
    now: datetime,
) -> list[RoleView]:
    """Create the roles, environment-wide or of the tenant: all of them, or none."""
    for new in new_roles:
        _require_default_to_migrate(new.migrate_role, new.is_default)
    keys = [new.key for new in new_roles]
    _require_distinct_keys("Role", keys)
    if tenant_id is not None:
        await get_tenant(session, tenant_id)
    taken = list(
        await session.scalars(sa.select(Role.key).where(_in_scope(tenant_id), Role.key.in_(keys)))
    )
    if taken:
        raise Conflict(f"Role keys already exist: {', '.join(sorted(taken))}")
    roles = [
        Role(
            id=_new_id(),
            tenant_id=tenant_id,
            key=new.key,
            name=new.name,
            description=new.description,
            is_default=new.is_default,
            first_user_role=new.first_user_role,
            level=new.level,
            created_at=now,
            updated_at=now,
        )
        for new in new_roles
    ]
    session.add_all(roles)
    await _flush_or_conflict(session, f"A role key was taken meanwhile: one of {', '.join(keys)}")
    for role, new in zip(roles, new_roles, strict=True):
        details: dict[str, Any] = {"key": role.key}
        if new.migrate_role:
            details["migratedUsers"] = await _migrate_default_role(session, role)
        audit.record(
            session,
            caller,
            "role.created",
            target_type="role",
            target_id=role.id,
            tenant_id=tenant_id,
            now=now,
            details=details,
        )
    await session.flush()
    return [RoleView(role, []) for role in roles]


async def _role_to_change(session: AsyncSession, role_id: str, tenant_id: str | None) -> Role:
    """The role, locked for the change; with a tenant named, another tenant's role is unknown."""
    if tenant_id is not None:
        await get_tenant(session, tenant_id)
    role = await session.get(Role, role_id, with_for_update=True)
    if role is None or (tenant_id is not None and role.tenant_id not in (None, tenant_id)):
        raise NotFound(f"Role {role_id} not found")
    return role


async def update_role(
    session: AsyncSession,
    caller: Caller,
    role_id: str,
    tenant_id: str | None,
    change: RoleChange,
    now: datetime,
) -> RoleView:
    role = await _role_to_change(session, role_id, tenant_id)
    is_default = role.is_default if change.is_default is None else change.is_default
    _require_default_to_migrate(change.migrate_role, is_default)
    taken = f"Role key {change.key} already exists"
    if change.key is not None and change.key != role.key:
        clash = await session.scalar(
            sa.select(Role.id).where(_in_scope(role.tenant_id), Role.key == change.key)
        )
        if clash is not None:
            raise Conflict(taken)
    changed = _apply_given(role, {field: getattr(change, field) for field in ROLE_FIELDS})
    if changed:
        role.updated_at = now
        await _flush_or_conflict(session, taken)
    migrated = await _migrate_default_role(session, role) if change.migrate_role else 0
    if changed or migrated:
        audit.record(
            session,
            caller,
            "role.updated",
            target_type="role",
            target_id=role.id,
            tenant_id=role.tenant_id,
            now=now,
            details={"changed": changed, "migratedUsers": migrated},
        )
        await session.flush()
    return (await _role_views(session, [role]))[0]


async def delete_role(
    session: AsyncSession, caller: Caller, role_id: str, tenant_id: str | None, now: datetime
) -> None:
    """Delete the role; the foreign keys take it from every user and token that held it."""
    role = await _role_to_change(session, role_id, tenant_id)
    await session.execute(sa.delete(Role).where(Role.id == role.id))
    audit.record(
        session,
        caller,
        "role.deleted",
        target_type="role",
        target_id=role.id,
        tenant_id=role.tenant_id,
        now=now,
        details={"key": role.key},
    )
    await session.flush()


async def set_role_permissions(
    session: AsyncSession,
    caller: Caller,
    role_id: str,
    tenant_id: str | None,
    permission_ids: Collection[str],
    now: datetime,
) -> RoleView:
    """Replace the role's permissions with these."""
    role = await _role_to_change(session, role_id, tenant_id)
    wanted = {permission.id for permission in await existing_permissions(session, permission_ids)}
    current = set(
        await session.scalars(
            sa.select(role_permissions.c.permission_id).where(role_permissions.c.role_id == role.id)
        )
    )
    removed, added = sorted(current - wanted), sorted(wanted - current)
    if removed:
        await session.execute(
            sa.delete(role_permissions).where(
                role_permissions.c.role_id == role.id,
                role_permissions.c.permission_id.in_(removed),
            )
        )
    if added:
        await session.execute(
            sa.insert(role_permissions),
            [{"role_id": role.id, "permission_id": pid} for pid in added],
        )
    if removed or added:
        role.updated_at = now
        audit.record(
            session,
            caller,
            "role.permissions_set",
            target_type="role",
            target_id=role.id,
            tenant_id=role.tenant_id,
            now=now,
            details={"added": added, "removed": removed},
        )
        await session.flush()
    return RoleView(role, sorted(wanted))


# --- permissions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPermission:
    key: str
    name: str
    description: str | None = None
    category_id: str | None = None


async def list_permissions(session: AsyncSession) -> list[PermissionView]:
    permissions = list(await session.scalars(sa.select(Permission).order_by(Permission.key)))
    return await _permission_views(session, permissions, all_of_them=True)


async def create_permissions(
    session: AsyncSession,
    caller: Caller,
    new_permissions: Sequence[NewPermission],
    now: datetime,
) -> list[PermissionView]:
    """Create the permissions: all of them, or none."""
    keys = [new.key for new in new_permissions]
    _require_distinct_keys("Permission", keys)
    taken = list(await session.scalars(sa.select(Permission.key).where(Permission.key.in_(keys))))
    if taken:
        raise Conflict(f"Permission keys already exist: {', '.join(sorted(taken))}")
    permissions = [
        Permission(
            id=_new_id(),
            key=new.key,
            name=new.name,
            description=new.description,
            category_id=new.category_id,
            fe_permission=False,
            created_at=now,
            updated_at=now,
        )
        for new in new_permissions
    ]
    session.add_all(permissions)
    await _flush_or_conflict(
        session, f"A permission key was taken meanwhile: one of {', '.join(keys)}"
    )
    for permission in permissions:
        audit.record(
            session,
            caller,
            "permission.created",
            target_type="permission",
            target_id=permission.id,
            now=now,
            details={"key": permission.key},
        )
    await session.flush()
    return [PermissionView(permission, []) for permission in permissions]


@dataclass(frozen=True)
class PermissionChange:
    """Fields to change; None leaves a field as it is."""

    key: str | None = None
    name: str | None = None
    description: str | None = None
    category_id: str | None = None


PERMISSION_FIELDS = ("key", "name", "description", "category_id")


async def _permission_to_change(session: AsyncSession, permission_id: str) -> Permission:
    """The permission, locked for the change. The built-in fe.secure.* permissions are refused:
    the token routes and self-service decide by their keys, so they stay as the first
    migration made them."""
    permission = await session.get(Permission, permission_id, with_for_update=True)
    if permission is None:
        raise NotFound(f"Permission {permission_id} not found")
    if permission.fe_permission:
        raise Forbidden(
            f"Permission {permission.key} is built in: the token routes and self-service rely"
            " on it, so it cannot be changed or deleted"
        )
    return permission


async def update_permission(
    session: AsyncSession,
    caller: Caller,
    permission_id: str,
    change: PermissionChange,
    now: datetime,
) -> PermissionView:
    """Change the permission; which roles hold it is left as it is.

    A new key reaches access-token validations within the validity cache's bound on the
    staleness of roles and permissions (README, "Validity cache"), and the next exchange.
    """
    permission = await _permission_to_change(session, permission_id)
    taken = f"Permission key {change.key} already exists"
    if change.key is not None and change.key != permission.key:
        clash = await session.scalar(sa.select(Permission.id).where(Permission.key == change.key))
        if clash is not None:
            raise Conflict(taken)
    changed = _apply_given(
        permission, {field: getattr(change, field) for field in PERMISSION_FIELDS}
    )
    if changed:
        permission.updated_at = now
        await _flush_or_conflict(session, taken)
        audit.record(
            session,
            caller,
            "permission.updated",
            target_type="permission",
            target_id=permission.id,
            now=now,
            details={"changed": changed},
        )
        await session.flush()
    return (await _permission_views(session, [permission]))[0]


async def delete_permission(
    session: AsyncSession, caller: Caller, permission_id: str, now: datetime
) -> None:
    """Delete the permission; the foreign keys take it from every role and tenant credential.

    Access tokens stop presenting it within the validity cache's bound on the staleness of
    roles and permissions (README, "Validity cache"); the next exchange leaves it out.
    """
    permission = await _permission_to_change(session, permission_id)
    await session.execute(sa.delete(Permission).where(Permission.id == permission.id))
    audit.record(
        session,
        caller,
        "permission.deleted",
        target_type="permission",
        target_id=permission.id,
        now=now,
        details={"key": permission.key},
    )
    await session.flush()
