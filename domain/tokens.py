"""The four token kinds ({user, tenant} x {access token, client credentials}).

Each kind is described once (`TokenKind`: its resource, whether it is a user's, what it may
be given, and its `TokenRows`: model, id column, strategy, not-found message and audit names)
and read by one shared function each for scope, list, delete, audit and invalidation. Every
Frontegg operation keeps a named entry point here (`create_tenant_access_token`,
`delete_user_client_credential`, ...) that calls the shared code.
Creation stays per kind where the kinds differ: an argon2 secret or a signed JWT, grants only on
tenant kinds, PATCH only on tenant credentials.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.auth import Caller
from domain.configuration import Strategy, get_environment, require_creation_allowed
from domain.directory import get_tenant, get_user_in_tenant
from domain.errors import Forbidden, InvalidInput, MissingHeader, NotFound
from domain.grants import Grant, access_token_grant, credential_grant
from domain.keys import Signer
from domain.models import (
    AccessToken,
    ClientCredential,
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
M = TypeVar("M", AccessToken, ClientCredential)


# --- the kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A table that links a token to the ids of what it was given (roles or permissions)."""

    table: sa.Table
    token_column: str
    linked_column: str

    def pairs(self) -> sa.Select[Any]:
        """(token id, linked id) rows."""
        return sa.select(self.table.c[self.token_column], self.table.c[self.linked_column])


@dataclass(frozen=True)
class TokenRows(Generic[M]):
    """Where tokens are stored, as access tokens or as client credentials."""

    model: type[M]
    id_column: InstrumentedAttribute[str]
    tenant_column: InstrumentedAttribute[str]
    user_column: InstrumentedAttribute[str | None]
    created_column: InstrumentedAttribute[datetime]
    strategy: Strategy  # the machineToMachineAuthStrategy under which they may be created
    not_found: str  # with {id}
    audit_target: Literal["access_token", "client_credential"]

    def id_of(self, token: M) -> str:
        value: str = getattr(token, self.id_column.key)
        return value

    def deleted(self, ids: Sequence[str]) -> AfterCommit:
        """Tombstones for deleted tokens, written after the commit."""
        if self.model is AccessToken:
            return AfterCommit().delete_tokens(access_token_ids=ids)
        return AfterCommit().delete_tokens(client_ids=ids)


ACCESS_TOKEN_ROWS = TokenRows(
    model=AccessToken,
    id_column=AccessToken.id,
    tenant_column=AccessToken.tenant_id,
    user_column=AccessToken.user_id,
    created_column=AccessToken.created_at,
    strategy="AccessToken",
    not_found="Access token {id} not found",
    audit_target="access_token",
)
CREDENTIAL_ROWS = TokenRows(
    model=ClientCredential,
    id_column=ClientCredential.client_id,
    tenant_column=ClientCredential.tenant_id,
    user_column=ClientCredential.user_id,
    created_column=ClientCredential.created_at,
    strategy="ClientCredentials",
    not_found="Api token {id} not found",
    audit_target="client_credential",
)


@dataclass(frozen=True)
class TokenKind(Generic[M]):
    """One of the four kinds, as the shared code reads it."""

    name: Kind  # the token's `type` claim, and `kind` in its audit events
    resource: Resource  # guarded by fe.secure.{read,write,delete}.<resource>
    rows: TokenRows[M]
    per_user: bool  # a user's personal token, or the account's own
    roles: Link | None = None  # what it may be given: tenant kinds only
    permissions: Link | None = None


USER_CLIENT_CREDENTIALS = TokenKind("userApiToken", "userApiTokens", CREDENTIAL_ROWS, per_user=True)
USER_ACCESS_TOKENS = TokenKind("userAccessToken", "userApiTokens", ACCESS_TOKEN_ROWS, per_user=True)
TENANT_CLIENT_CREDENTIALS = TokenKind(
    "tenantApiToken",
    "tenantApiTokens",
    CREDENTIAL_ROWS,
    per_user=False,
    roles=Link(credential_roles, "client_id", "role_id"),
    permissions=Link(credential_permissions, "client_id", "permission_id"),
)
TENANT_ACCESS_TOKENS = TokenKind(
    "tenantAccessToken",
    "tenantApiTokens",
    ACCESS_TOKEN_ROWS,
    per_user=False,
    roles=Link(access_token_roles, "token_id", "role_id"),
)


# --- what the operations take and give -------------------------------------------------------


@dataclass(frozen=True)
class Acting:
    """The tenant and user a vendor names in frontegg-tenant-id / frontegg-user-id.

    An end user always acts in its own session's tenant and as itself; what it names is ignored.
    """

    tenant_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class Scope:
    """Whose tokens a request touches, and who acts.

    `owner_user_id` is the user of personal tokens (None: the account's own tokens). The acting
    user, if any, is recorded as createdByUserId and may only grant what it holds.
    """

    tenant_id: str
    owner_user_id: str | None
    acting_user_id: str | None


@dataclass(frozen=True)
class TokenView(Generic[T]):
    """A token row with the ids of the roles and permissions it was given."""

    token: T
    role_ids: list[str] = field(default_factory=list)
    permission_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Issued(Generic[T]):
    """A token just created, with the secret that exists nowhere else from now on."""

    token: T
    secret: str = field(repr=False)  # kept out of any log line that prints this object


@dataclass(frozen=True)
class CredentialChange:
    """A PATCH of a tenant credential; None leaves a field as it is."""

    description: str | None = None
    metadata: dict[str, Any] | None = None
    role_ids: Sequence[str] | None = None
    permission_ids: Sequence[str] | None = None


# --- shared by the kinds: scope, list, delete, audit -----------------------------------------


async def _scope(
    session: AsyncSession, caller: Caller, acting: Acting, kind: TokenKind[Any], action: Action
) -> Scope:
    """The tenant and users of a request, once the caller may do `action` on `kind`."""
    caller.require(f"fe.secure.{action}.{kind.resource}")
    tenant_id, user_id = await _acting_tenant_and_user(session, caller, acting)
    if not kind.per_user:
        return Scope(tenant_id=tenant_id, owner_user_id=None, acting_user_id=user_id)
    if user_id is None:
        raise MissingHeader(USER_HEADER)
    return Scope(tenant_id=tenant_id, owner_user_id=user_id, acting_user_id=user_id)


async def _acting_tenant_and_user(
    session: AsyncSession, caller: Caller, acting: Acting
) -> tuple[str, str | None]:
    """An end user acts in its own tenant as itself; the vendor in the tenant (and as the user,
    if any) it names, each of which must exist."""
    if not caller.is_vendor:
        if caller.tenant_id is None or caller.user_id is None:
            raise Forbidden("An end user acts only within its own account")
        return caller.tenant_id, caller.user_id
    if acting.tenant_id is None:
        raise MissingHeader(TENANT_HEADER)
    await get_tenant(session, acting.tenant_id)
    if acting.user_id is not None:
        await get_user_in_tenant(session, acting.user_id, acting.tenant_id)
    return acting.tenant_id, acting.user_id


def _owned(kind: TokenKind[Any], scope: Scope) -> list[sa.ColumnElement[bool]]:
    """Tokens of this kind owned in the scope: one user's, or the account's own; nobody else's."""
    owner = (
        kind.rows.user_column == scope.owner_user_id
        if scope.owner_user_id is not None
        else kind.rows.user_column.is_(None)
    )
    return [kind.rows.tenant_column == scope.tenant_id, owner]


def _record(
    session: AsyncSession,
    caller: Caller,
    verb: Literal["created", "updated", "deleted"],
    kind: TokenKind[Any],
    token_id: str,
    scope: Scope,
    now: datetime,
    **details: Any,
) -> None:
    if verb in ("created", "deleted"):
        data: dict[str, Any] = {"id": token_id, "kind": kind.name, "tenantId": scope.tenant_id}
        if kind.per_user:
            data["userId"] = scope.owner_user_id
        announced = events.TOKEN_CREATED if verb == "created" else events.TOKEN_DELETED
        events.announce(session, announced, data, now)
    if kind.per_user:
        details = {"userId": scope.owner_user_id, **details}
    audit.record(
        session,
        caller,
        f"token.{verb}",
        target_type=kind.rows.audit_target,
        target_id=token_id,
        now=now,
        tenant_id=scope.tenant_id,
        details={"kind": kind.name, **details},
    )


async def _list(
    session: AsyncSession, caller: Caller, acting: Acting, kind: TokenKind[M]
) -> list[TokenView[M]]:
    """The kind's tokens in the caller's scope, oldest first, with what each was given."""
    scope = await _scope(session, caller, acting, kind, "read")
    owned = _owned(kind, scope)
    rows = list(
        await session.scalars(
            sa.select(kind.rows.model)
            .where(*owned)
            .order_by(kind.rows.created_column, kind.rows.id_column)
        )
    )
    roles = await _linked_ids(session, kind, kind.roles, owned)
    permissions = await _linked_ids(session, kind, kind.permissions, owned)
    return [
        TokenView(
            token=row,
            role_ids=roles.get(kind.rows.id_of(row), []),
            permission_ids=permissions.get(kind.rows.id_of(row), []),
        )
        for row in rows
    ]


async def _delete(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[Any],
    token_id: str,
    now: datetime,
) -> AfterCommit:
    """Delete one token of the kind in the caller's scope; after the commit it is invalid here
    at once and on every process within the validity cache's bound."""
    scope = await _scope(session, caller, acting, kind, "delete")
    deleted = await session.scalar(
        sa.delete(kind.rows.model)
        .where(kind.rows.id_column == token_id, *_owned(kind, scope))
        .returning(kind.rows.id_column)
    )
    if deleted is None:
        raise NotFound(kind.rows.not_found.format(id=token_id))
    _record(session, caller, "deleted", kind, token_id, scope, now)
    await session.flush()
    return kind.rows.deleted([token_id])


# --- creation: the rules shared by the kinds ---------------------------------------------------


async def _start_creation(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[Any],
    expires_in_minutes: int | None,
    now: datetime,
) -> tuple[Scope, datetime | None]:
    """The scope of a new token and when it expires, once the caller may write the kind and the
    environment allows creating it."""
    scope = await _scope(session, caller, acting, kind, "write")
    require_creation_allowed(await get_environment(session), kind.rows.strategy)
    return scope, _expiry(now, expires_in_minutes)


def _expiry(now: datetime, expires_in_minutes: int | None) -> datetime | None:
    """When a token made now expires; None means never."""
    if expires_in_minutes is None:
        return None
    if not 1 <= expires_in_minutes <= MAX_EXPIRES_IN_MINUTES:
        raise InvalidInput(f"expiresInMinutes must be from 1 to {MAX_EXPIRES_IN_MINUTES}")
    return now + timedelta(minutes=expires_in_minutes)


async def _new_credential(
    session: AsyncSession,
    scope: Scope,
    hasher: SecretHasher,
    *,
    description: str | None,
    metadata: dict[str, Any],
    expires_at: datetime | None,
    now: datetime,
) -> tuple[ClientCredential, str]:
    """A new credential row and its client secret; only the secret's argon2id hash is stored."""
    secret = new_secret()
    credential = ClientCredential(
        client_id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=scope.owner_user_id,
        created_by_user_id=scope.acting_user_id,
        description=description,
        metadata_json=metadata,
        secret_hash=await hasher.hash(secret),
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(credential)
    await session.flush()
    return credential, secret


async def _new_access_token(
    session: AsyncSession,
    scope: Scope,
    signer: Signer,
    *,
    description: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> AccessToken:
    token = AccessToken(
        id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=scope.owner_user_id,
        created_by_user_id=scope.acting_user_id,
        description=description,
        expires_at=expires_at,
        created_at=now,
        signing_kid=signer.kid,
    )
    session.add(token)
    await session.flush()
    return token


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


async def _give(session: AsyncSession, kind: TokenKind[M], token: M, grant: Grant) -> TokenView[M]:
    """Link the token to the roles and permissions of `grant`."""
    token_id = kind.rows.id_of(token)
    for link, ids in (
        (kind.roles, [r.id for r in grant.roles]),
        (kind.permissions, [p.id for p in grant.permissions]),
    ):
        if ids:
            assert link is not None, f"{kind.name} is given no such grants"
            await session.execute(
                sa.insert(link.table),
                [{link.token_column: token_id, link.linked_column: linked} for linked in ids],
            )
    return TokenView(
        token=token,
        role_ids=sorted(role.id for role in grant.roles),
        permission_ids=sorted(permission.id for permission in grant.permissions),
    )


# --- user client credentials -----------------------------------------------------------------


async def create_user_client_credential(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    hasher: SecretHasher,
    *,
    description: str | None,
    metadata: dict[str, Any],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TokenView[ClientCredential]]:
    kind = USER_CLIENT_CREDENTIALS
    scope, expires_at = await _start_creation(
        session, caller, acting, kind, expires_in_minutes, now
    )
    credential, secret = await _new_credential(
        session,
        scope,
        hasher,
        description=description,
        metadata=metadata,
        expires_at=expires_at,
        now=now,
    )
    _record(session, caller, "created", kind, credential.client_id, scope, now)
    return Issued(token=TokenView(credential), secret=secret)


async def list_user_client_credentials(
    session: AsyncSession, caller: Caller, acting: Acting
) -> list[TokenView[ClientCredential]]:
    return await _list(session, caller, acting, USER_CLIENT_CREDENTIALS)


async def delete_user_client_credential(
    session: AsyncSession, caller: Caller, acting: Acting, client_id: str, now: datetime
) -> AfterCommit:
    return await _delete(session, caller, acting, USER_CLIENT_CREDENTIALS, client_id, now)


# --- user access tokens ----------------------------------------------------------------------


async def create_user_access_token(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    signer: Signer,
    issuer: str,
    *,
    description: str | None,
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TokenView[AccessToken]]:
    kind = USER_ACCESS_TOKENS
    scope, expires_at = await _start_creation(
        session, caller, acting, kind, expires_in_minutes, now
    )
    token = await _new_access_token(
        session, scope, signer, description=description, expires_at=expires_at, now=now
    )
    _record(session, caller, "created", kind, token.id, scope, now)
    return Issued(token=TokenView(token), secret=_sign_access_token(signer, issuer, token))


async def list_user_access_tokens(
    session: AsyncSession, caller: Caller, acting: Acting
) -> list[TokenView[AccessToken]]:
    return await _list(session, caller, acting, USER_ACCESS_TOKENS)


async def delete_user_access_token(
    session: AsyncSession, caller: Caller, acting: Acting, token_id: str, now: datetime
) -> AfterCommit:
    return await _delete(session, caller, acting, USER_ACCESS_TOKENS, token_id, now)


# --- tenant client credentials ---------------------------------------------------------------


async def create_tenant_client_credential(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    hasher: SecretHasher,
    *,
    description: str | None,
    metadata: dict[str, Any],
    role_ids: Collection[str],
    permission_ids: Collection[str],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TokenView[ClientCredential]]:
    kind = TENANT_CLIENT_CREDENTIALS
    scope, expires_at = await _start_creation(
        session, caller, acting, kind, expires_in_minutes, now
    )
    grant = await credential_grant(
        session, scope.tenant_id, scope.acting_user_id, role_ids, permission_ids
    )
    credential, secret = await _new_credential(
        session,
        scope,
        hasher,
        description=description,
        metadata=metadata,
        expires_at=expires_at,
        now=now,
    )
    view = await _give(session, kind, credential, grant)
    _record(
        session,
        caller,
        "created",
        kind,
        credential.client_id,
        scope,
        now,
        roleIds=view.role_ids,
        permissionIds=view.permission_ids,
    )
    return Issued(token=view, secret=secret)


async def list_tenant_client_credentials(
    session: AsyncSession, caller: Caller, acting: Acting
) -> list[TokenView[ClientCredential]]:
    return await _list(session, caller, acting, TENANT_CLIENT_CREDENTIALS)


async def update_tenant_client_credential(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    client_id: str,
    change: CredentialChange,
    now: datetime,
) -> TokenView[ClientCredential]:
    """Given roleIds replace the roles and clear the permissions; given permissionIds alone
    replace the permissions and clear the roles. Allowed while M2M is disabled."""
    kind = TENANT_CLIENT_CREDENTIALS
    scope = await _scope(session, caller, acting, kind, "write")
    credential = await session.scalar(
        sa.select(ClientCredential)
        .where(ClientCredential.client_id == client_id, *_owned(kind, scope))
        .with_for_update()
    )
    if credential is None:
        raise NotFound(kind.rows.not_found.format(id=client_id))
    changed: list[str] = []
    if change.description is not None:
        credential.description = change.description
        changed.append("description")
    if change.metadata is not None:
        credential.metadata_json = change.metadata
        changed.append("metadata")
    if change.role_ids is not None or change.permission_ids is not None:
        grant = await credential_grant(
            session,
            scope.tenant_id,
            scope.acting_user_id,
            change.role_ids or (),
            change.permission_ids or (),
        )
        await session.execute(
            sa.delete(credential_roles).where(credential_roles.c.client_id == client_id)
        )
        await session.execute(
            sa.delete(credential_permissions).where(credential_permissions.c.client_id == client_id)
        )
        view = await _give(session, kind, credential, grant)
        changed.extend(["roleIds", "permissionIds"])
    else:
        view = await _view(session, kind, credential)
    credential.updated_at = now
    await session.flush()
    _record(
        session,
        caller,
        "updated",
        kind,
        client_id,
        scope,
        now,
        changed=changed,
        roleIds=view.role_ids,
        permissionIds=view.permission_ids,
    )
    return view


async def delete_tenant_client_credential(
    session: AsyncSession, caller: Caller, acting: Acting, client_id: str, now: datetime
) -> AfterCommit:
    return await _delete(session, caller, acting, TENANT_CLIENT_CREDENTIALS, client_id, now)


# --- tenant access tokens --------------------------------------------------------------------


async def create_tenant_access_token(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    signer: Signer,
    issuer: str,
    *,
    description: str | None,
    role_ids: Collection[str],
    expires_in_minutes: int | None,
    now: datetime,
) -> Issued[TokenView[AccessToken]]:
    kind = TENANT_ACCESS_TOKENS
    scope, expires_at = await _start_creation(
        session, caller, acting, kind, expires_in_minutes, now
    )
    grant = await access_token_grant(session, scope.tenant_id, scope.acting_user_id, role_ids)
    token = await _new_access_token(
        session, scope, signer, description=description, expires_at=expires_at, now=now
    )
    view = await _give(session, kind, token, grant)
    _record(session, caller, "created", kind, token.id, scope, now, roleIds=view.role_ids)
    return Issued(token=view, secret=_sign_access_token(signer, issuer, token))


async def list_tenant_access_tokens(
    session: AsyncSession, caller: Caller, acting: Acting
) -> list[TokenView[AccessToken]]:
    return await _list(session, caller, acting, TENANT_ACCESS_TOKENS)


async def delete_tenant_access_token(
    session: AsyncSession, caller: Caller, acting: Acting, token_id: str, now: datetime
) -> AfterCommit:
    return await _delete(session, caller, acting, TENANT_ACCESS_TOKENS, token_id, now)


# --- links -------------------------------------------------------------------------------------


async def _view(session: AsyncSession, kind: TokenKind[M], token: M) -> TokenView[M]:
    """One token with what it was given."""
    where = [kind.rows.id_column == kind.rows.id_of(token)]
    roles = await _linked_ids(session, kind, kind.roles, where)
    permissions = await _linked_ids(session, kind, kind.permissions, where)
    token_id = kind.rows.id_of(token)
    return TokenView(
        token=token,
        role_ids=roles.get(token_id, []),
        permission_ids=permissions.get(token_id, []),
    )


async def _linked_ids(
    session: AsyncSession,
    kind: TokenKind[Any],
    link: Link | None,
    where: Sequence[sa.ColumnElement[bool]],
) -> dict[str, list[str]]:
    """The ids `link` gives the kind's tokens that match `where`, by token, each list sorted."""
    if link is None:
        return {}
    pairs = link.pairs()
    pairs = pairs.join(
        kind.rows.model, kind.rows.id_column == link.table.c[link.token_column]
    ).where(*where)
    linked: dict[str, list[str]] = {}
    for token_id, linked_id in await session.execute(pairs.order_by(*pairs.selected_columns)):
        linked.setdefault(token_id, []).append(linked_id)
    return linked


# --- the listing the vendor-only /active routes serve ------------------------------------------


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


# --- every token of one tenant, as the vendor's console shows them ---------------------------

KINDS: tuple[TokenKind[Any], ...] = (
    TENANT_CLIENT_CREDENTIALS,
    TENANT_ACCESS_TOKENS,
    USER_CLIENT_CREDENTIALS,
    USER_ACCESS_TOKENS,
)


@dataclass(frozen=True)
class KindedToken:
    """A token of any kind, with the kind that tells how to read and delete it."""

    kind: TokenKind[Any]
    view: TokenView[Any]

    @property
    def id(self) -> str:
        return self.kind.rows.id_of(self.view.token)


async def tokens_of_tenant(session: AsyncSession, tenant_id: str) -> list[KindedToken]:
    """Every token of the tenant, the four kinds, oldest first: the account's own and its users'
    personal tokens (not those of a user being deleted, which are already gone for validation),
    each with what it was given."""
    await get_tenant(session, tenant_id)
    listed: list[KindedToken] = []
    for kind in KINDS:
        where = [kind.rows.tenant_column == tenant_id]
        if kind.per_user:
            live_users = sa.select(User.id).where(User.tenant_id == tenant_id, not_deleted(User))
            where.append(kind.rows.user_column.in_(live_users))
        else:
            where.append(kind.rows.user_column.is_(None))
        rows = list(await session.scalars(sa.select(kind.rows.model).where(*where)))
        roles = await _linked_ids(session, kind, kind.roles, where)
        permissions = await _linked_ids(session, kind, kind.permissions, where)
        for row in rows:
            token_id = kind.rows.id_of(row)
            view = TokenView(
                token=row,
                role_ids=roles.get(token_id, []),
                permission_ids=permissions.get(token_id, []),
            )
            listed.append(KindedToken(kind=kind, view=view))
    return sorted(listed, key=lambda token: (token.view.token.created_at, token.id))
