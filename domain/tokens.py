"""The four token kinds ({user, tenant} x {access token, client credentials}): create, list,
update and delete."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit
from domain.auth import Caller
from domain.configuration import Strategy, get_environment, require_creation_allowed
from domain.directory import (
    assignable_roles,
    existing_permissions,
    get_tenant,
    get_user_in_tenant,
    require_grantable,
)
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.keys import Signer
from domain.models import (
    AccessToken,
    ClientCredential,
    Permission,
    Role,
    Tenant,
    User,
    access_token_roles,
    credential_permissions,
    credential_roles,
)
from domain.secrets import SecretHasher, new_secret
from domain.validity.fills import not_deleted

MAX_EXPIRES_IN_MINUTES = 5_256_000  # ten years
TENANT_HEADER = "frontegg-tenant-id"
USER_HEADER = "frontegg-user-id"

Kind = Literal["userApiToken", "tenantApiToken", "userAccessToken", "tenantAccessToken"]
Action = Literal["read", "write", "delete"]
Resource = Literal["userApiTokens", "tenantApiTokens"]

T = TypeVar("T")


@dataclass(frozen=True)
class Named:
    """The tenant and user a vendor names in frontegg-tenant-id / frontegg-user-id.

    An end user always acts in its own session's tenant and as itself; what it names is ignored.
    """

    tenant_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class UserScope:
    """The user whose personal tokens a request touches."""

    tenant_id: str
    user_id: str


@dataclass(frozen=True)
class TenantScope:
    """The tenant whose tokens a request touches, and the user acting, if any.

    The acting user is recorded as createdByUserId and may only grant what it holds.
    """

    tenant_id: str
    acting_user_id: str | None


@dataclass(frozen=True)
class Issued(Generic[T]):
    """A token just created, with the secret that exists nowhere else from now on."""

    token: T
    secret: str = field(repr=False)  # kept out of any log line that prints this object


@dataclass(frozen=True)
class TenantCredential:
    credential: ClientCredential
    role_ids: list[str]
    permission_ids: list[str]


@dataclass(frozen=True)
class TenantAccessToken:
    token: AccessToken
    role_ids: list[str]


@dataclass(frozen=True)
class CredentialChange:
    """A PATCH of a tenant credential; None leaves a field as it is."""

    description: str | None = None
    metadata: dict[str, Any] | None = None
    role_ids: Sequence[str] | None = None
    permission_ids: Sequence[str] | None = None


@dataclass(frozen=True)
class _Grant:
    roles: list[Role]
    permissions: list[Permission]


# --- who acts, and where ---------------------------------------------------------------------


async def _authorize(
    session: AsyncSession, caller: Caller, named: Named, resource: Resource, action: Action
) -> tuple[str, str | None]:
    """The tenant and the acting user of a request, once the caller may do `action`."""
    caller.require(f"fe.secure.{action}.{resource}")
    if not caller.is_vendor:
        if caller.tenant_id is None or caller.user_id is None:
            raise Forbidden("An end user acts only within its own account")
        return caller.tenant_id, caller.user_id
    if named.tenant_id is None:
        raise InvalidInput(f"The {TENANT_HEADER} header is required")
    await get_tenant(session, named.tenant_id)
    if named.user_id is None:
        return named.tenant_id, None
    await get_user_in_tenant(session, named.user_id, named.tenant_id)
    return named.tenant_id, named.user_id


async def _user_scope(
    session: AsyncSession, caller: Caller, named: Named, action: Action
) -> UserScope:
    tenant_id, user_id = await _authorize(session, caller, named, "userApiTokens", action)
    if user_id is None:
        raise InvalidInput(f"The {USER_HEADER} header is required")
    return UserScope(tenant_id=tenant_id, user_id=user_id)


async def _tenant_scope(
    session: AsyncSession, caller: Caller, named: Named, action: Action
) -> TenantScope:
    tenant_id, user_id = await _authorize(session, caller, named, "tenantApiTokens", action)
    return TenantScope(tenant_id=tenant_id, acting_user_id=user_id)


# --- rules shared by the kinds ---------------------------------------------------------------


async def _require_creation_allowed(session: AsyncSession, strategy: Strategy) -> None:
    require_creation_allowed(await get_environment(session), strategy)


def _expiry(now: datetime, expires_in_minutes: int | None) -> datetime | None:
    """When a token made now expires; None means never."""
    if expires_in_minutes is None:
        return None
    if not 1 <= expires_in_minutes <= MAX_EXPIRES_IN_MINUTES:
        raise InvalidInput(f"expiresInMinutes must be from 1 to {MAX_EXPIRES_IN_MINUTES}")
    return now + timedelta(minutes=expires_in_minutes)


async def _new_client_secret(hasher: SecretHasher) -> tuple[str, str]:
    """A fresh client secret and its argon2id hash; only the hash is ever stored."""
    secret = new_secret()
    return secret, await hasher.hash(secret)


def _sign_access_token(signer: Signer, issuer: str, token: AccessToken) -> str:
    """The access token itself: a JWT naming its row, never stored."""
    claims: dict[str, Any] = {
        "type": "userAccessToken" if token.user_id is not None else "tenantAccessToken",
        "sub": token.id,
        "tenantId": token.tenant_id,
    }
    if token.user_id is not None:
        claims["userId"] = token.user_id
    claims["iss"] = issuer
    claims["iat"] = int(token.created_at.timestamp())
    if token.expires_at is not None:
        claims["exp"] = int(token.expires_at.timestamp())
    return signer.sign(claims)


async def _require_acting_user_holds(
    session: AsyncSession, scope: TenantScope, grant: _Grant
) -> None:
    """A user (end user, or one the vendor names) only gives a token what the user holds."""
    if scope.acting_user_id is None:
        return
    await require_grantable(
        session, scope.acting_user_id, scope.tenant_id, grant.roles, grant.permissions
    )


async def _credential_grant(
    session: AsyncSession,
    scope: TenantScope,
    role_ids: Collection[str],
    permission_ids: Collection[str],
) -> _Grant:
    """What a tenant credential is given: roleIds override permissionIds (Frontegg's rule)."""
    if role_ids:
        grant = _Grant(
            roles=await assignable_roles(session, scope.tenant_id, role_ids), permissions=[]
        )
    elif permission_ids:
        grant = _Grant(roles=[], permissions=await existing_permissions(session, permission_ids))
    else:
        raise InvalidInput("Either roleIds or permissionIds must be given")
    await _require_acting_user_holds(session, scope, grant)
    return grant


async def _access_token_grant(
    session: AsyncSession, scope: TenantScope, role_ids: Collection[str]
) -> _Grant:
    grant = _Grant(roles=await assignable_roles(session, scope.tenant_id, role_ids), permissions=[])
    await _require_acting_user_holds(session, scope, grant)
    return grant


def _record(
    session: AsyncSession,
    caller: Caller,
    verb: Literal["created", "updated", "deleted"],
    kind: Kind,
    token_id: str,
    tenant_id: str,
    now: datetime,
    **details: Any,
) -> None:
    audit.record(
        session,
        caller,
        f"token.{verb}",
        target_type="access_token" if kind.endswith("AccessToken") else "client_credential",
        target_id=token_id,
        now=now,
        tenant_id=tenant_id,
        details={"kind": kind, **details},
    )


def _owned_access_tokens(tenant_id: str, user_id: str | None) -> list[sa.ColumnElement[bool]]:
    """Access tokens of one user, or (user_id None) the tenant's own; nobody else's."""
    owner = AccessToken.user_id == user_id if user_id is not None else AccessToken.user_id.is_(None)
    return [AccessToken.tenant_id == tenant_id, owner]


def _owned_credentials(tenant_id: str, user_id: str | None) -> list[sa.ColumnElement[bool]]:
    """Client credentials of one user, or (user_id None) the tenant's own; nobody else's."""
    owner = (
        ClientCredential.user_id == user_id
        if user_id is not None
        else ClientCredential.user_id.is_(None)
    )
    return [ClientCredential.tenant_id == tenant_id, owner]


async def _delete_access_token(
    session: AsyncSession, where: list[sa.ColumnElement[bool]], token_id: str
) -> None:
    deleted = await session.scalar(
        sa.delete(AccessToken).where(AccessToken.id == token_id, *where).returning(AccessToken.id)
    )
    if deleted is None:
        raise NotFound(f"Access token {token_id} not found")


async def _delete_credential(
    session: AsyncSession, where: list[sa.ColumnElement[bool]], client_id: str
) -> None:
    deleted = await session.scalar(
        sa.delete(ClientCredential)
        .where(ClientCredential.client_id == client_id, *where)
        .returning(ClientCredential.client_id)
    )
    if deleted is None:
        raise NotFound(f"Api token {client_id} not found")


# --- user client credentials -----------------------------------------------------------------


async def create_user_client_credential(
    session: AsyncSession,
    caller: Caller,
    named: Named,
    hasher: SecretHasher,
    *,
    description: str | None,
    metadata: dict[str, Any],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[ClientCredential]:
    scope = await _user_scope(session, caller, named, "write")
    await _require_creation_allowed(session, "ClientCredentials")
    expires_at = _expiry(now, expires_in_minutes)
    secret, secret_hash = await _new_client_secret(hasher)
    credential = ClientCredential(
        client_id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=scope.user_id,
        created_by_user_id=scope.user_id,
        description=description,
        metadata_json=metadata,
        secret_hash=secret_hash,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(credential)
    await session.flush()
    _record(
        session,
        caller,
        "created",
        "userApiToken",
        credential.client_id,
        scope.tenant_id,
        now,
        userId=scope.user_id,
    )
    return Issued(token=credential, secret=secret)


async def list_user_client_credentials(
    session: AsyncSession, caller: Caller, named: Named
) -> list[ClientCredential]:
    scope = await _user_scope(session, caller, named, "read")
    rows = await session.scalars(
        sa.select(ClientCredential)
        .where(*_owned_credentials(scope.tenant_id, scope.user_id))
        .order_by(ClientCredential.created_at, ClientCredential.client_id)
    )
    return list(rows)


async def delete_user_client_credential(
    session: AsyncSession, caller: Caller, named: Named, client_id: str, now: datetime
) -> None:
    scope = await _user_scope(session, caller, named, "delete")
    await _delete_credential(session, _owned_credentials(scope.tenant_id, scope.user_id), client_id)
    _record(
        session,
        caller,
        "deleted",
        "userApiToken",
        client_id,
        scope.tenant_id,
        now,
        userId=scope.user_id,
    )
    await session.flush()


# --- user access tokens ----------------------------------------------------------------------


async def create_user_access_token(
    session: AsyncSession,
    caller: Caller,
    named: Named,
    signer: Signer,
    issuer: str,
    *,
    description: str | None,
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[AccessToken]:
    scope = await _user_scope(session, caller, named, "write")
    await _require_creation_allowed(session, "AccessToken")
    expires_at = _expiry(now, expires_in_minutes)
    token = AccessToken(
        id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=scope.user_id,
        created_by_user_id=scope.user_id,
        description=description,
        expires_at=expires_at,
        created_at=now,
        signing_kid=signer.kid,
    )
    session.add(token)
    await session.flush()
    _record(
        session,
        caller,
        "created",
        "userAccessToken",
        token.id,
        scope.tenant_id,
        now,
        userId=scope.user_id,
    )
    return Issued(token=token, secret=_sign_access_token(signer, issuer, token))


async def list_user_access_tokens(
    session: AsyncSession, caller: Caller, named: Named
) -> list[AccessToken]:
    scope = await _user_scope(session, caller, named, "read")
    rows = await session.scalars(
        sa.select(AccessToken)
        .where(*_owned_access_tokens(scope.tenant_id, scope.user_id))
        .order_by(AccessToken.created_at, AccessToken.id)
    )
    return list(rows)


async def delete_user_access_token(
    session: AsyncSession, caller: Caller, named: Named, token_id: str, now: datetime
) -> None:
    scope = await _user_scope(session, caller, named, "delete")
    await _delete_access_token(
        session, _owned_access_tokens(scope.tenant_id, scope.user_id), token_id
    )
    _record(
        session,
        caller,
        "deleted",
        "userAccessToken",
        token_id,
        scope.tenant_id,
        now,
        userId=scope.user_id,
    )
    await session.flush()


# --- tenant client credentials ---------------------------------------------------------------


async def create_tenant_client_credential(
    session: AsyncSession,
    caller: Caller,
    named: Named,
    hasher: SecretHasher,
    *,
    description: str | None,
    metadata: dict[str, Any],
    role_ids: Collection[str],
    permission_ids: Collection[str],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TenantCredential]:
    scope = await _tenant_scope(session, caller, named, "write")
    await _require_creation_allowed(session, "ClientCredentials")
    expires_at = _expiry(now, expires_in_minutes)
    grant = await _credential_grant(session, scope, role_ids, permission_ids)
    secret, secret_hash = await _new_client_secret(hasher)
    credential = ClientCredential(
        client_id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=None,
        created_by_user_id=scope.acting_user_id,
        description=description,
        metadata_json=metadata,
        secret_hash=secret_hash,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(credential)
    await session.flush()
    view = await _give_credential(session, credential, grant)
    _record(
        session,
        caller,
        "created",
        "tenantApiToken",
        credential.client_id,
        scope.tenant_id,
        now,
        roleIds=view.role_ids,
        permissionIds=view.permission_ids,
    )
    return Issued(token=view, secret=secret)


async def list_tenant_client_credentials(
    session: AsyncSession, caller: Caller, named: Named
) -> list[TenantCredential]:
    scope = await _tenant_scope(session, caller, named, "read")
    owned = _owned_credentials(scope.tenant_id, None)
    credentials = list(
        await session.scalars(
            sa.select(ClientCredential)
            .where(*owned)
            .order_by(ClientCredential.created_at, ClientCredential.client_id)
        )
    )
    roles = await _linked_ids(
        session,
        sa.select(credential_roles.c.client_id, credential_roles.c.role_id)
        .join(ClientCredential, ClientCredential.client_id == credential_roles.c.client_id)
        .where(*owned),
    )
    permissions = await _linked_ids(
        session,
        sa.select(credential_permissions.c.client_id, credential_permissions.c.permission_id)
        .join(ClientCredential, ClientCredential.client_id == credential_permissions.c.client_id)
        .where(*owned),
    )
    return [
        TenantCredential(
            credential=credential,
            role_ids=roles.get(credential.client_id, []),
            permission_ids=permissions.get(credential.client_id, []),
        )
        for credential in credentials
    ]


async def update_tenant_client_credential(
    session: AsyncSession,
    caller: Caller,
    named: Named,
    client_id: str,
    change: CredentialChange,
    now: datetime,
) -> TenantCredential:
    """Given roleIds replace the roles and clear the permissions; given permissionIds alone
    replace the permissions and clear the roles. Allowed while M2M is disabled."""
    scope = await _tenant_scope(session, caller, named, "write")
    credential = await session.scalar(
        sa.select(ClientCredential)
        .where(ClientCredential.client_id == client_id, *_owned_credentials(scope.tenant_id, None))
        .with_for_update()
    )
    if credential is None:
        raise NotFound(f"Api token {client_id} not found")
    changed: list[str] = []
    if change.description is not None:
        credential.description = change.description
        changed.append("description")
    if change.metadata is not None:
        credential.metadata_json = change.metadata
        changed.append("metadata")
    if change.role_ids is not None or change.permission_ids is not None:
        grant = await _credential_grant(
            session, scope, change.role_ids or (), change.permission_ids or ()
        )
        await session.execute(
            sa.delete(credential_roles).where(credential_roles.c.client_id == client_id)
        )
        await session.execute(
            sa.delete(credential_permissions).where(credential_permissions.c.client_id == client_id)
        )
        view = await _give_credential(session, credential, grant)
        changed.extend(["roleIds", "permissionIds"])
    else:
        view = await _credential_view(session, credential)
    credential.updated_at = now
    await session.flush()
    _record(
        session,
        caller,
        "updated",
        "tenantApiToken",
        client_id,
        scope.tenant_id,
        now,
        changed=changed,
        roleIds=view.role_ids,
        permissionIds=view.permission_ids,
    )
    return view


async def delete_tenant_client_credential(
    session: AsyncSession, caller: Caller, named: Named, client_id: str, now: datetime
) -> None:
    scope = await _tenant_scope(session, caller, named, "delete")
    await _delete_credential(session, _owned_credentials(scope.tenant_id, None), client_id)
    _record(session, caller, "deleted", "tenantApiToken", client_id, scope.tenant_id, now)
    await session.flush()


async def _give_credential(
    session: AsyncSession, credential: ClientCredential, grant: _Grant
) -> TenantCredential:
    if grant.roles:
        await session.execute(
            sa.insert(credential_roles),
            [{"client_id": credential.client_id, "role_id": role.id} for role in grant.roles],
        )
    if grant.permissions:
        await session.execute(
            sa.insert(credential_permissions),
            [
                {"client_id": credential.client_id, "permission_id": permission.id}
                for permission in grant.permissions
            ],
        )
    return TenantCredential(
        credential=credential,
        role_ids=sorted(role.id for role in grant.roles),
        permission_ids=sorted(permission.id for permission in grant.permissions),
    )


async def _credential_view(session: AsyncSession, credential: ClientCredential) -> TenantCredential:
    role_ids = await session.scalars(
        sa.select(credential_roles.c.role_id)
        .where(credential_roles.c.client_id == credential.client_id)
        .order_by(credential_roles.c.role_id)
    )
    permission_ids = await session.scalars(
        sa.select(credential_permissions.c.permission_id)
        .where(credential_permissions.c.client_id == credential.client_id)
        .order_by(credential_permissions.c.permission_id)
    )
    return TenantCredential(
        credential=credential, role_ids=list(role_ids), permission_ids=list(permission_ids)
    )


# --- tenant access tokens --------------------------------------------------------------------


async def create_tenant_access_token(
    session: AsyncSession,
    caller: Caller,
    named: Named,
    signer: Signer,
    issuer: str,
    *,
    description: str | None,
    role_ids: Collection[str],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TenantAccessToken]:
    scope = await _tenant_scope(session, caller, named, "write")
    await _require_creation_allowed(session, "AccessToken")
    expires_at = _expiry(now, expires_in_minutes)
    grant = await _access_token_grant(session, scope, role_ids)
    token = AccessToken(
        id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=None,
        created_by_user_id=scope.acting_user_id,
        description=description,
        expires_at=expires_at,
        created_at=now,
        signing_kid=signer.kid,
    )
    session.add(token)
    await session.flush()
    if grant.roles:
        await session.execute(
            sa.insert(access_token_roles),
            [{"token_id": token.id, "role_id": role.id} for role in grant.roles],
        )
    view = TenantAccessToken(token=token, role_ids=sorted(role.id for role in grant.roles))
    _record(
        session,
        caller,
        "created",
        "tenantAccessToken",
        token.id,
        scope.tenant_id,
        now,
        roleIds=view.role_ids,
    )
    return Issued(token=view, secret=_sign_access_token(signer, issuer, token))


async def list_tenant_access_tokens(
    session: AsyncSession, caller: Caller, named: Named
) -> list[TenantAccessToken]:
    scope = await _tenant_scope(session, caller, named, "read")
    owned = _owned_access_tokens(scope.tenant_id, None)
    tokens = list(
        await session.scalars(
            sa.select(AccessToken).where(*owned).order_by(AccessToken.created_at, AccessToken.id)
        )
    )
    roles = await _linked_ids(
        session,
        sa.select(access_token_roles.c.token_id, access_token_roles.c.role_id)
        .join(AccessToken, AccessToken.id == access_token_roles.c.token_id)
        .where(*owned),
    )
    return [TenantAccessToken(token=token, role_ids=roles.get(token.id, [])) for token in tokens]


async def delete_tenant_access_token(
    session: AsyncSession, caller: Caller, named: Named, token_id: str, now: datetime
) -> None:
    scope = await _tenant_scope(session, caller, named, "delete")
    await _delete_access_token(session, _owned_access_tokens(scope.tenant_id, None), token_id)
    _record(session, caller, "deleted", "tenantAccessToken", token_id, scope.tenant_id, now)
    await session.flush()


async def _linked_ids(session: AsyncSession, pairs: sa.Select[str, str]) -> dict[str, list[str]]:
    """(token id, linked id) rows grouped by token, each group sorted."""
    linked: dict[str, list[str]] = {}
    for token_id, linked_id in await session.execute(pairs.order_by(*pairs.selected_columns)):
        linked.setdefault(token_id, []).append(linked_id)
    return linked


def _valid_now(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(AccessToken.expires_at.is_(None), AccessToken.expires_at > now)


async def active_access_token_ids(
    session: AsyncSession, *, user_tokens: bool, tenant_id: str | None, now: datetime
) -> str:
    """The JSON array of the ids of the access tokens valid now, of one tenant or of all, built
    by the database in one statement (100,000 ids: no Python object per row).

    "Valid now" is: exists, has not expired, and its tenant (and user) is not deleted, as
    validation reads it; the M2M switch is the caller's to check.
    """
    kind = AccessToken.user_id.is_not(None) if user_tokens else AccessToken.user_id.is_(None)
    if session.get_bind().dialect.name == "postgresql":
        array: sa.ColumnElement[Any] = sa.cast(sa.func.json_agg(AccessToken.id), sa.Text)
    else:
        array = sa.func.json_group_array(AccessToken.id)
    statement = (
        sa.select(array)
        .join(Tenant, sa.and_(Tenant.id == AccessToken.tenant_id, not_deleted(Tenant)))
        .outerjoin(User, sa.and_(User.id == AccessToken.user_id, not_deleted(User)))
        .where(kind, _valid_now(now), sa.or_(AccessToken.user_id.is_(None), User.id.is_not(None)))
    )
    if tenant_id is not None:
        statement = statement.where(AccessToken.tenant_id == tenant_id)
    ids: str | None = await session.scalar(statement)
    return ids or "[]"  # json_agg of no rows is NULL
