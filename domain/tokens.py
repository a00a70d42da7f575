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
from typing import Any, Final, Generic, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from domain import audit, events, policy
from domain.after_commit import AfterCommit
from domain.auth import Caller
from domain.configuration import Strategy, get_environment, require_creation_allowed
from domain.directory import get_tenant, get_user_in_tenant, live_user
from domain.errors import Conflict, Forbidden, InvalidInput, MissingHeader, NotFound
from domain.grants import Grant, access_token_grant, credential_grant
from domain.jobs import CASCADE_DELETIONS, PRUNE_REFRESH_TOKENS
from domain.keys import Signer
from domain.models import (
    AccessToken,
    ClientCredential,
    RefreshToken,
    Tenant,
    User,
    access_token_roles,
    credential_permissions,
    credential_roles,
)
from domain.policy import MAX_EXPIRES_IN_MINUTES, Policy
from domain.rotation import overlap_end
from domain.secrets import CLIENT_SECRET, SecretHasher, SecretShape, sha256_hex
from domain.validity.fills import live_owner, not_deleted, survived_revocations

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
    """Tokens of this kind owned in the scope: one user's, or the account's own; nobody else's.
    Those revoked with every token of the account or user are gone already."""
    owner = (
        kind.rows.user_column == scope.owner_user_id
        if scope.owner_user_id is not None
        else kind.rows.user_column.is_(None)
    )
    return [
        kind.rows.tenant_column == scope.tenant_id,
        owner,
        survived_revocations(kind.rows.model),
    ]


# The token changes announced as outbound events (README "Outbound events").
_ANNOUNCED: Final = {
    "created": events.TOKEN_CREATED,
    "deleted": events.TOKEN_DELETED,
    "rotated": events.TOKEN_ROTATED,
}


def _record(
    session: AsyncSession,
    caller: Caller,
    verb: Literal["created", "updated", "deleted", "rotated", "rotation_ended"],
    kind: TokenKind[Any],
    token_id: str,
    scope: Scope,
    now: datetime,
    **details: Any,
) -> None:
    announced = _ANNOUNCED.get(verb)
    if announced is not None:
        data: dict[str, Any] = {"id": token_id, "kind": kind.name, "tenantId": scope.tenant_id}
        if kind.per_user:
            data["userId"] = scope.owner_user_id
        if verb == "rotated":  # the overlap, and when the old secret or token stops
            data.update(details)
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


async def delete_found_token(
    session: AsyncSession, rows: TokenRows[Any], token_id: str
) -> AfterCommit | None:
    """Delete a token found by value rather than through its owner (a leak report), as a
    deletion does: the row (a credential's refresh tokens go with it), and after the commit the
    same tombstone, so it is refused everywhere at once. None when it was already gone."""
    deleted = await session.scalar(
        sa.delete(rows.model).where(rows.id_column == token_id).returning(rows.id_column)
    )
    if deleted is None:
        return None
    await session.flush()
    return rows.deleted([token_id])


# --- creation: the rules shared by the kinds ---------------------------------------------------


async def _start_creation(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[Any],
    expires_in_minutes: int | None,
    now: datetime,
) -> tuple[Scope, datetime | None]:
    """The scope of a new token and when it expires, once the caller may write the kind, the
    environment allows creating it, and the account's token policy allows it (its expiration,
    and one more token of the kind: counted under the policy's lock, so that concurrent
    creations cannot together pass the cap)."""
    scope = await _scope(session, caller, acting, kind, "write")
    require_creation_allowed(await get_environment(session), kind.rows.strategy)
    expires_at = _expiry(now, expires_in_minutes)
    rules = await policy.policy_for_creation(session, scope.tenant_id, kind.name)
    policy.require_expiration_allowed(rules, expires_in_minutes)
    if rules.most_tokens(kind.name) is not None:
        existing = await session.scalar(
            sa.select(sa.func.count())
            .select_from(kind.rows.model)
            .where(*_owned(kind, scope), *policy.live_tokens_of(kind.rows.model, now))
        )
        policy.require_room_for_one_more(rules, kind.name, existing or 0)
    return scope, expires_at


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
    shape: SecretShape,
    *,
    description: str | None,
    metadata: dict[str, Any],
    expires_at: datetime | None,
    now: datetime,
) -> tuple[ClientCredential, str]:
    """A new credential row and its client secret, of the environment's shape (see
    `_client_secret` for what is stored)."""
    secret, secret_hash, secret_lookup = await _client_secret(hasher, shape)
    credential = ClientCredential(
        client_id=str(uuid.uuid4()),
        tenant_id=scope.tenant_id,
        user_id=scope.owner_user_id,
        created_by_user_id=scope.acting_user_id,
        description=description,
        metadata_json=metadata,
        secret_hash=secret_hash,
        secret_lookup=secret_lookup,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(credential)
    await session.flush()
    return credential, secret


async def _client_secret(hasher: SecretHasher, shape: SecretShape) -> tuple[str, str, str]:
    """A new client secret of the environment's shape, what a creation and a rotation hand out,
    with what is stored of it: its argon2id hash, which exchange checks, and its SHA-256, by
    which a leak report finds it (178 random bits: no guessing attack exists on either)."""
    secret = shape.new(CLIENT_SECRET)
    return secret, await hasher.hash(secret), sha256_hex(secret)


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
    shape: SecretShape,
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
        shape,
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
    shape: SecretShape,
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
        shape,
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


# --- revoke everything ---------------------------------------------------------------------------


async def _revoke_refresh_tokens(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[ClientCredential],
    client_id: str,
    now: datetime,
) -> tuple[int, AfterCommit]:
    """Revoke every usable refresh token of the credential; the credential stays, and its
    machines must exchange their secret again. The credential's row is locked as an exchange
    locks it, so an exchange either finished before (its refresh token is revoked here) or
    starts after. The JWTs already issued live until their `exp`.

    Returns how many were revoked; the prune job deletes the rows after the commit. The
    revocation feed says `refreshTokens` of the credential when any was.
    """
    scope = await _scope(session, caller, acting, kind, "write")
    found = await session.scalar(
        sa.select(ClientCredential.client_id)
        .where(ClientCredential.client_id == client_id, *_owned(kind, scope))
        .with_for_update()
    )
    if found is None:
        raise NotFound(kind.rows.not_found.format(id=client_id))
    revoked = await session.execute(
        sa.update(RefreshToken)
        .where(
            RefreshToken.client_id == client_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(revoked_at=now)
    )
    count = max(int(getattr(revoked, "rowcount", 0) or 0), 0)
    _record(session, caller, "updated", kind, client_id, scope, now, revokedRefreshTokens=count)
    await session.flush()
    after = AfterCommit().enqueue(PRUNE_REFRESH_TOKENS, client_id=client_id)
    if count:
        # One entry for the credential: an entry per family would be as many as its machines.
        after.revoke("refreshTokens", clientId=client_id)
    return count, after


async def revoke_user_client_credential_refresh_tokens(
    session: AsyncSession, caller: Caller, acting: Acting, client_id: str, now: datetime
) -> tuple[int, AfterCommit]:
    return await _revoke_refresh_tokens(
        session, caller, acting, USER_CLIENT_CREDENTIALS, client_id, now
    )


async def revoke_tenant_client_credential_refresh_tokens(
    session: AsyncSession, caller: Caller, acting: Acting, client_id: str, now: datetime
) -> tuple[int, AfterCommit]:
    return await _revoke_refresh_tokens(
        session, caller, acting, TENANT_CLIENT_CREDENTIALS, client_id, now
    )


@dataclass(frozen=True)
class Revoked:
    """What "revoke every token" of a user or an account ended: the counts, and the instant up
    to which every token made is gone."""

    access_tokens: int
    client_credentials: int
    revoked_at: datetime


async def _count_live(
    session: AsyncSession, model: Any, owner: sa.ColumnElement[bool], now: datetime
) -> int:
    """How many tokens of `model` matching `owner` are alive (an expired one is dead already)."""
    counted = await session.scalar(
        sa.select(sa.func.count())
        .select_from(model)
        .where(owner, *policy.live_tokens_of(model, now))
    )
    return int(counted or 0)


def _next_mark(previous: datetime | None, now: datetime) -> datetime:
    """The new revoke-all instant: later than the last, so that it starts a new generation."""
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


async def revoke_every_token_of_user(
    session: AsyncSession, caller: Caller, user_id: str, tenant_id: str | None, now: datetime
) -> tuple[Revoked, AfterCommit]:
    """End every access token, client credential and refresh token of the user; the user stays.

    The user's row carries the instant: from this commit on every token of it made until then
    is gone for every reader (validation, exchange, refresh, listings); after the commit the
    validity cache's tombstone of the user's previous generation makes it so on every process
    within the cache's bound, and the cascade job deletes the rows in batches.
    """
    user: User | None = await session.scalar(live_user(user_id).with_for_update(of=User))
    if user is None or (tenant_id is not None and user.tenant_id != tenant_id):
        raise NotFound(f"User {user_id} not found")
    generation = user.tokens_revoked_at or user.created_at
    mark = _next_mark(user.tokens_revoked_at, now)
    revoked = Revoked(
        access_tokens=await _count_live(session, AccessToken, AccessToken.user_id == user_id, now),
        client_credentials=await _count_live(
            session, ClientCredential, ClientCredential.user_id == user_id, now
        ),
        revoked_at=mark,
    )
    user.tokens_revoked_at = mark
    _record_revoke_all(session, caller, "user", user_id, user.tenant_id, revoked, now)
    events.announce(
        session,
        events.TOKENS_REVOKED,
        {"tenantId": user.tenant_id, "userId": user_id, "reason": "revoke_all"},
        now,
    )
    await session.flush()
    return revoked, (
        AfterCommit()
        .revoke_tokens_of_user(user_id, generation, mark)
        .enqueue(CASCADE_DELETIONS, user_id=user_id)
    )


async def revoke_every_token_of_tenant(
    session: AsyncSession, caller: Caller, tenant_id: str, now: datetime
) -> tuple[Revoked, AfterCommit]:
    """End every token of the account, its own and its users' personal ones; the account and
    its users stay. As `revoke_every_token_of_user`, with the tenant's row and tombstone."""
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None or tenant.deleted_at is not None:
        raise NotFound(f"Tenant {tenant_id} not found")
    generation = tenant.tokens_revoked_at or tenant.created_at
    mark = _next_mark(tenant.tokens_revoked_at, now)
    revoked = Revoked(
        access_tokens=await _count_live(
            session, AccessToken, AccessToken.tenant_id == tenant_id, now
        ),
        client_credentials=await _count_live(
            session, ClientCredential, ClientCredential.tenant_id == tenant_id, now
        ),
        revoked_at=mark,
    )
    tenant.tokens_revoked_at = mark
    _record_revoke_all(session, caller, "tenant", tenant_id, tenant_id, revoked, now)
    events.announce(
        session, events.TOKENS_REVOKED, {"tenantId": tenant_id, "reason": "revoke_all"}, now
    )
    await session.flush()
    return revoked, (
        AfterCommit()
        .revoke_tokens_of_tenant(tenant_id, generation, mark)
        .enqueue(CASCADE_DELETIONS, tenant_id=tenant_id)
    )


def _record_revoke_all(
    session: AsyncSession,
    caller: Caller,
    target_type: Literal["user", "tenant"],
    target_id: str,
    tenant_id: str,
    revoked: Revoked,
    now: datetime,
) -> None:
    audit.record(
        session,
        caller,
        "tokens.revoked",
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        now=now,
        details={
            "accessTokens": revoked.access_tokens,
            "clientCredentials": revoked.client_credentials,
            "revokedAt": revoked.revoked_at.isoformat(),
        },
    )


# --- the account token policy ----------------------------------------------------------------

# Who may read the policy: its readers, and whoever may create tokens under it.
_POLICY_READERS = frozenset(
    {
        "fe.secure.read.tokenPolicy",
        "fe.secure.write.userApiTokens",
        "fe.secure.write.tenantApiTokens",
    }
)


async def get_token_policy(
    session: AsyncSession, caller: Caller, acting: Acting
) -> tuple[str, Policy]:
    """The policy of the caller's account (the vendor's: of the tenant it names)."""
    if not caller.is_vendor and not _POLICY_READERS & caller.permissions:
        raise Forbidden("Missing permission fe.secure.read.tokenPolicy")
    tenant_id, _ = await _acting_tenant_and_user(session, caller, acting)
    return tenant_id, await policy.effective_policy(session, tenant_id)


async def set_token_policy(
    session: AsyncSession, caller: Caller, acting: Acting, rules: Policy, now: datetime
) -> tuple[str, Policy, list[policy.Exceeding]]:
    """Replace the account's policy. Existing tokens stay as they are: what lies outside the
    new policy is returned (and recorded) so that the account can act on it."""
    caller.require("fe.secure.write.tokenPolicy")
    policy.validate(rules)
    tenant_id, _ = await _acting_tenant_and_user(session, caller, acting)
    stored = await policy.store(session, tenant_id, rules, now)
    outside = await policy.exceeding(session, tenant_id, stored, now)
    audit.record(
        session,
        caller,
        "token_policy.updated",
        target_type="tenant",
        target_id=tenant_id,
        tenant_id=tenant_id,
        now=now,
        details={
            "maxExpiresInMinutes": stored.max_expires_in_minutes,
            "requireExpiration": stored.require_expiration,
            "maxRotationOverlapMinutes": stored.max_rotation_overlap_minutes,
            "maxTokens": dict(stored.max_tokens),
            "exceeding": len(outside),
        },
    )
    await session.flush()
    return tenant_id, stored, outside


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
) -> tuple[str, datetime | None]:
    """The JSON array of the ids of the access tokens valid now, of one tenant or of all, built
    by the database in one statement (100,000 ids: no Python object per row), and the first
    expiry among them (None if none of them expires): the array holds until then.

    "Valid now" is: exists, has not expired, and its tenant (and user) is not deleted, as
    validation reads it; the M2M switch is the caller's to check.
    """
    kind = AccessToken.user_id.is_not(None) if user_tokens else AccessToken.user_id.is_(None)
    if session.get_bind().dialect.name == "postgresql":
        array: sa.ColumnElement[Any] = sa.cast(sa.func.json_agg(AccessToken.id), sa.Text)
    else:
        array = sa.func.json_group_array(AccessToken.id)
    statement = (
        sa.select(array, sa.func.min(AccessToken.expires_at))
        .join(
            Tenant,
            live_owner(Tenant, AccessToken),
        )
        .outerjoin(
            User,
            live_owner(User, AccessToken),
        )
        .where(kind, _valid_now(now), sa.or_(AccessToken.user_id.is_(None), User.id.is_not(None)))
    )
    if tenant_id is not None:
        statement = statement.where(AccessToken.tenant_id == tenant_id)
    ids, first_expiry = (await session.execute(statement)).one()
    return ids or "[]", first_expiry  # json_agg of no rows is NULL


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
        where = [kind.rows.tenant_column == tenant_id, survived_revocations(kind.rows.model)]
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


# --- rotation: a new secret or token, the old one working on for an overlap ---------------------

CLIENT_CREDENTIAL_KINDS: dict[Resource, TokenKind[ClientCredential]] = {
    "userApiTokens": USER_CLIENT_CREDENTIALS,
    "tenantApiTokens": TENANT_CLIENT_CREDENTIALS,
}
ACCESS_TOKEN_KINDS: dict[Resource, TokenKind[AccessToken]] = {
    "userApiTokens": USER_ACCESS_TOKENS,
    "tenantApiTokens": TENANT_ACCESS_TOKENS,
}


def previous_secret_works(credential: ClientCredential, now: datetime) -> bool:
    """The secret a rotation replaced still exchanges: its overlap has neither run out nor been
    ended. The exchange decides the same in SQL (domain/exchange.py)."""
    return (
        credential.previous_secret_hash is not None
        and credential.previous_secret_expires_at is not None
        and credential.previous_secret_expires_at > now
    )


async def _locked_owned(
    session: AsyncSession, kind: TokenKind[M], scope: Scope, token_id: str
) -> M:
    """The kind's token in the scope, its row locked for the rest of the transaction."""
    token = await session.scalar(
        sa.select(kind.rows.model)
        .where(kind.rows.id_column == token_id, *_owned(kind, scope))
        .with_for_update()
    )
    if token is None:
        raise NotFound(kind.rows.not_found.format(id=token_id))
    return token


async def rotate_client_credential(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[ClientCredential],
    hasher: SecretHasher,
    shape: SecretShape,
    client_id: str,
    *,
    overlap_minutes: int,
    now: datetime,
) -> Issued[TokenView[ClientCredential]]:
    """Give the credential a new secret; the one it replaces keeps exchanging for
    `overlap_minutes` (0: not at all), the new one from now on. Its refresh tokens and the JWTs
    it issued are untouched. Needs the kind's write permission, like a creation.

    Conflict while an earlier rotation's overlap runs (end it first: a third secret would cut
    off, unasked, whatever still uses the first), or once the credential has expired.
    """
    scope = await _scope(session, caller, acting, kind, "write")
    credential = await _locked_owned(session, kind, scope, client_id)
    if credential.expires_at is not None and credential.expires_at <= now:
        raise Conflict(f"Api token {client_id} has expired and cannot be rotated")
    if previous_secret_works(credential, now):
        raise Conflict(
            f"Api token {client_id} is in a rotation overlap until "
            f"{_iso(credential.previous_secret_expires_at)}; end it before rotating again"
        )
    ends = await overlap_end(session, scope.tenant_id, overlap_minutes, now)
    secret, secret_hash, secret_lookup = await _client_secret(hasher, shape)
    credential.previous_secret_hash = credential.secret_hash if overlap_minutes else None
    credential.previous_secret_lookup = credential.secret_lookup if overlap_minutes else None
    credential.previous_secret_expires_at = ends
    credential.previous_secret_used_at = None
    credential.secret_hash = secret_hash
    credential.secret_lookup = secret_lookup
    credential.rotated_at = now
    credential.updated_at = now
    await session.flush()
    _record(
        session,
        caller,
        "rotated",
        kind,
        client_id,
        scope,
        now,
        overlapMinutes=overlap_minutes,
        previousSecretExpires=_iso(ends),
    )
    return Issued(token=await _view(session, kind, credential), secret=secret)


async def end_credential_overlap(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[ClientCredential],
    client_id: str,
    now: datetime,
) -> TokenView[ClientCredential]:
    """End a rotation's overlap now: the previous secret stops exchanging from this commit on.
    Conflict when no overlap is running."""
    scope = await _scope(session, caller, acting, kind, "write")
    credential = await _locked_owned(session, kind, scope, client_id)
    if not previous_secret_works(credential, now):
        raise Conflict(f"Api token {client_id} has no rotation overlap running")
    # The hash goes, not only the time: an exchange that verified the previous secret before
    # this commit re-reads it under the credential's lock, and is refused (domain/exchange.py).
    credential.previous_secret_hash = None
    credential.previous_secret_lookup = None
    credential.previous_secret_expires_at = now
    credential.updated_at = now
    await session.flush()
    _record(session, caller, "rotation_ended", kind, client_id, scope, now)
    return await _view(session, kind, credential)


async def roll_access_token(
    session: AsyncSession,
    caller: Caller,
    acting: Acting,
    kind: TokenKind[AccessToken],
    signer: Signer,
    issuer: str,
    token_id: str,
    *,
    overlap_minutes: int,
    now: datetime,
) -> tuple[Issued[TokenView[AccessToken]], AfterCommit]:
    """A new access token with the old one's description, roles and expiry; the old one keeps
    validating for `overlap_minutes` (its expiry brought forward to the overlap's end, which
    validation already honours), then the expiry job deletes it. With 0 it is deleted now.
    Needs the kind's write permission, and (account tokens) the right to give its roles, like a
    creation.

    The account's token policy applies as to a creation, for the expiry the new token keeps:
    PolicyViolation (400, naming the rule) when it never expires and the policy requires an
    expiration, or expires further off than the policy's longest expiration. The cap on how many
    tokens there may be is not checked: a roll replaces one token with one, and the old one
    counts until the overlap ends (README "Rotation").

    Conflict for a token already rolled (its successor exists) or expired.
    """
    scope = await _scope(session, caller, acting, kind, "write")
    old = await _locked_owned(session, kind, scope, token_id)
    if old.replaced_by_id is not None:
        raise Conflict(f"Access token {token_id} was already rolled into {old.replaced_by_id}")
    if old.expires_at is not None and old.expires_at <= now:
        raise Conflict(f"Access token {token_id} has expired and cannot be rolled")
    policy.require_kept_expiry_allowed(
        await policy.effective_policy(session, scope.tenant_id), old.expires_at, now
    )
    ends = await overlap_end(session, scope.tenant_id, overlap_minutes, now)
    old_view = await _view(session, kind, old)
    grant = (
        await access_token_grant(session, scope.tenant_id, scope.acting_user_id, old_view.role_ids)
        if kind.roles is not None
        else Grant(roles=[], permissions=[])
    )
    new = await _new_access_token(
        session, scope, signer, description=old.description, expires_at=old.expires_at, now=now
    )
    view = await _give(session, kind, new, grant)
    old_ends = ends if old.expires_at is None else min(ends, old.expires_at)
    _record(
        session,
        caller,
        "created",
        kind,
        new.id,
        scope,
        now,
        roleIds=view.role_ids,
        rolledFrom=token_id,
    )
    _record(
        session,
        caller,
        "rotated",
        kind,
        token_id,
        scope,
        now,
        replacedBy=new.id,
        overlapMinutes=overlap_minutes,
        expires=_iso(old_ends),
    )
    issued = Issued(token=view, secret=_sign_access_token(signer, issuer, new))
    if overlap_minutes == 0:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id == token_id))
        _record(session, caller, "deleted", kind, token_id, scope, now, replacedBy=new.id)
        await session.flush()
        return issued, kind.rows.deleted([token_id]).add_access_tokens()
    old.replaced_by_id = new.id
    old.expires_at = old_ends
    await session.flush()
    # Cached entries carry the old expiry: dropped, so the next validation reads the new one.
    # The new token is announced like a creation (the SDKs' active-token lists).
    return issued, AfterCommit().evict_tokens(access_token_ids=[token_id]).add_access_tokens()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
