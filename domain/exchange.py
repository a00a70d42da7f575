"""Client-credential exchange, refresh-token rotation and revocation; the 100-token cap lives here.

Hot path: Core statements built once at import, run on the session's connection, and the round
trips are counted on each public function. Lock order, everywhere: the credential's row first
(SELECT ... FOR UPDATE), then its refresh tokens. Exchange, refresh and reuse detection all
follow it, so they never deadlock.

Issuance takes two statements after the credential's lock, and not one: under READ COMMITTED a
statement reads the snapshot taken when it began, so the statement that keeps the cap must
begin after the lock is held to see every token issued by whoever held the lock before. On
PostgreSQL each of the two is one statement (data-modifying CTEs); other databases (SQLite, for
`m2m dev`: one process, one writer at a time) run the same parts one by one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.clock import utcnow
from domain.db import statement_connection
from domain.errors import Disabled, InvalidInput, Unauthenticated
from domain.keys import Signer
from domain.models import (
    ENVIRONMENT_ROW_ID,
    ClientCredential,
    Environment,
    Permission,
    RefreshToken,
    Role,
    Tenant,
    User,
    credential_permissions,
    credential_roles,
    role_permissions,
    user_roles,
)
from domain.ratelimit import RateLimiter
from domain.secrets import CLIENT_SECRET, REFRESH_TOKEN, SecretHasher, SecretShape, sha256_hex
from domain.validity.fills import made_since_revocation

Clock = Callable[[], datetime]

# A credential has at most this many usable refresh tokens at any instant: issuing one more
# retires the oldest in the same transaction, and the prune job deletes any beyond it.
REFRESH_TOKENS_ROTATION_LIMIT = 100

USER_TOKEN = "userApiToken"
TENANT_TOKEN = "tenantApiToken"
EXCHANGE_TOKEN_TYPES = frozenset({USER_TOKEN, TENANT_TOKEN})
INVALID_CLIENT = "Invalid client credentials"
INVALID_REFRESH_TOKEN = "Invalid refresh token"
REUSE_DETECTED = "refresh_token.reuse_detected"
# What a malformed refresh token presented without client authentication is counted against.
REFRESH_TOKEN_SUBJECT = "refresh token"


class InvalidClient(Unauthenticated):
    """Unknown clientId, wrong secret, expired credential, or one whose tenant or user is
    deleted: one answer for all."""

    def __init__(self, message: str = INVALID_CLIENT) -> None:
        super().__init__(message)


class InvalidGrant(Unauthenticated):
    """A refresh token that is unknown, used, revoked, expired, or not the caller's, or whose
    credential, tenant or user is deleted."""

    def __init__(self) -> None:
        super().__init__(INVALID_REFRESH_TOKEN)


class RefreshTokenReused(InvalidGrant):
    """A used refresh token came back: its family is revoked, and that revocation must be
    committed although the request fails, then `after` applied (the revocation feed's entry)."""

    def __init__(self, after: AfterCommit | None = None) -> None:
        super().__init__()
        self.after = after or AfterCommit()


class UnsupportedGrantType(InvalidInput):
    """A grant_type this server does not offer."""


class UnsupportedTokenType(InvalidInput):
    """Client-credential JWTs are stateless and short-lived: deleting the credential ends them."""

    def __init__(self) -> None:
        super().__init__(
            "Only refresh tokens can be revoked; an access token dies with its credential"
        )


@dataclass(frozen=True)
class ClientSecret:
    """A clientId and the secret presented with it."""

    client_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenPair:
    """What an exchange or a refresh hands out: a signed JWT and a fresh refresh token.

    The JWT is signed when first read, which the routes do after their commit: RS256 costs about
    a millisecond, and the credential's row lock (which serializes every issuance of one
    credential) is not held meanwhile. A pair whose transaction fails is never signed.
    """

    claims: dict[str, Any] = field(repr=False)
    signer: Signer = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    expires_at: datetime
    client_id: str = ""  # the credential it was issued to (its last use is recorded)

    @cached_property
    def access_token(self) -> str:
        return self.signer.sign(self.claims)


@dataclass(frozen=True)
class _Credential:
    """A credential locked for issuance, with the environment settings issuance needs."""

    client_id: str
    tenant_id: str
    user_id: str | None
    created_by_user_id: str | None
    metadata: dict[str, Any]
    expires_at: datetime | None
    api_tokens_enabled: bool
    token_seconds: int
    refresh_token_seconds: int

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


# --- the statements, built once -------------------------------------------------------------

_credentials = cast(sa.Table, ClientCredential.__table__)
_tokens = cast(sa.Table, RefreshToken.__table__)
_tenants = cast(sa.Table, Tenant.__table__)
_users = cast(sa.Table, User.__table__)
_environment = cast(sa.Table, Environment.__table__)
_roles = cast(sa.Table, Role.__table__)
_permissions = cast(sa.Table, Permission.__table__)

_moment = _tokens.c.created_at.type
_NOW = sa.bindparam("now", type_=_moment)
_ISSUED_AT = sa.bindparam("issued_at", type_=_moment)
# Named after no column of refresh_tokens: a parameter named like a column of the table an
# UPDATE or INSERT writes is taken as one more value to write.
_CLIENT_ID = sa.bindparam("credential_id", type_=_credentials.c.client_id.type)
_TOKEN_HASH = sa.bindparam("presented_hash", type_=_tokens.c.token_hash.type)


def usable_refresh_token(tokens: Any, now: Any) -> list[sa.ColumnElement[bool]]:
    """A refresh token can still be exchanged: not used, not revoked, not expired.

    `tokens`: refresh_tokens' columns (the table's `.c`, the model, or an alias of either).
    """
    return [tokens.used_at.is_(None), tokens.revoked_at.is_(None), tokens.expires_at > now]


def refresh_tokens_beyond_cap(
    tokens: Any, now: Any, *, keep: int = REFRESH_TOKENS_ROTATION_LIMIT, client_id: Any = None
) -> sa.Select[Any]:
    """Ids of the usable refresh tokens beyond the newest `keep` of their credential: of the
    credential `client_id` only when given (a value or a bound parameter), else of every one.

    `tokens`: refresh_tokens' columns, as for `usable_refresh_token`.
    """
    newest_first = (tokens.created_at.desc(), tokens.id.desc())
    usable = usable_refresh_token(tokens, now)
    if client_id is not None:
        return (
            sa.select(tokens.id)
            .where(tokens.client_id == client_id, *usable)
            .order_by(*newest_first)
            .offset(keep)
        )
    ranked = (
        sa.select(
            tokens.id,
            sa.func.row_number()
            .over(partition_by=tokens.client_id, order_by=newest_first)
            .label("newest"),
        )
        .where(*usable)
        .subquery("ranked")
    )
    return sa.select(ranked.c.id).where(ranked.c.newest > keep)


def _owners_live() -> sa.ColumnElement[bool]:
    """The credential's tenant, and its user for a user credential, are not deleted.

    A deletion sets deleted_at first and removes the rows later (a background job): from the
    first instant the credential is as gone as an unknown one. "Revoke every token" of the
    tenant or user does the same for the credentials made until then.
    """
    return sa.and_(
        ~sa.exists().where(_tenants.c.id == _credentials.c.tenant_id, _owner_took_it(_tenants.c)),
        ~sa.exists().where(_users.c.id == _credentials.c.user_id, _owner_took_it(_users.c)),
    )


def _owner_took_it(owner: Any) -> sa.ColumnElement[bool]:
    """The owner is deleted, or revoked every token it had when the credential was made."""
    return sa.or_(
        owner.deleted_at.is_not(None),
        ~made_since_revocation(owner, _credentials.c.created_at),
    )


# A rotation's previous secret while it still exchanges: its overlap has not run out (decided
# here, against the request's clock) and has not been ended (which clears the hash).
_PREVIOUS_SECRET_HASH = sa.case(
    (_credentials.c.previous_secret_expires_at > _NOW, _credentials.c.previous_secret_hash),
    else_=sa.null(),
).label("previous_secret_hash")

# What authenticate_client reads before the argon2 work.
_READ_SECRET = sa.select(
    _credentials.c.secret_hash, _PREVIOUS_SECRET_HASH, _credentials.c.expires_at
).where(_credentials.c.client_id == _CLIENT_ID, _owners_live())


def _lock_credential(where: sa.ColumnElement[bool], *, secrets: bool = False) -> sa.Select[Any]:
    """Lock the credential's row (not the table) and read it with the environment settings
    (and, for an exchange, the secrets that may exchange now)."""
    secret_columns = [_credentials.c.secret_hash, _PREVIOUS_SECRET_HASH] if secrets else []
    return (
        sa.select(
            *secret_columns,
            _credentials.c.client_id,
            _credentials.c.tenant_id,
            _credentials.c.user_id,
            _credentials.c.created_by_user_id,
            _credentials.c["metadata"].label("metadata_json"),
            _credentials.c.expires_at,
            _environment.c.api_tokens_enabled,
            _environment.c.default_token_expiration,
            _environment.c.default_refresh_token_expiration,
        )
        .select_from(_credentials)
        .join(_environment, _environment.c.id == ENVIRONMENT_ROW_ID)
        .where(where, _owners_live())
        .with_for_update(of=_credentials)
    )


_LOCK_BY_CLIENT_ID = _lock_credential(_credentials.c.client_id == _CLIENT_ID, secrets=True)
_MARK_PREVIOUS_SECRET_USED = (
    sa.update(_credentials)
    .where(
        _credentials.c.client_id == _CLIENT_ID,
        _credentials.c.previous_secret_hash == sa.bindparam("matched_hash"),
    )
    .values(previous_secret_used_at=_NOW)
)


def _lock_by_refresh_token(bound_to_client: bool) -> sa.Select[Any]:
    """Lock the credential that owns the refresh token presented (of `client_id`, if bound)."""
    owner = sa.select(_tokens.c.client_id).where(_tokens.c.token_hash == _TOKEN_HASH)
    where = _credentials.c.client_id == owner.scalar_subquery()
    if bound_to_client:
        where = sa.and_(where, _credentials.c.client_id == _CLIENT_ID)
    return _lock_credential(where)


def _consume(client_id: sa.ColumnElement[Any]) -> sa.Update:
    """Mark the presented token used, if it is still usable: one atomic statement decides which
    of concurrent refreshes of one token wins."""
    return (
        sa.update(_tokens)
        .where(
            _tokens.c.token_hash == _TOKEN_HASH,
            _tokens.c.client_id == client_id,
            *usable_refresh_token(_tokens.c, _NOW),
        )
        .values(used_at=_NOW)
        .returning(_tokens.c.id, _tokens.c.family_id, _tokens.c.expires_at)
    )


def _lock_and_consume(bound_to_client: bool) -> sa.Select[Any]:
    """PostgreSQL: lock the owner and consume the token, in one statement. The credential's
    lock is taken before the token's row (the UPDATE reads the locked CTE)."""
    credential = _lock_by_refresh_token(bound_to_client).cte("credential")
    consumed = _consume(credential.c.client_id).cte("consumed")
    return sa.select(
        *credential.c,
        consumed.c.id.label("consumed_id"),
        consumed.c.family_id.label("consumed_family_id"),
        consumed.c.expires_at.label("consumed_expires_at"),
    ).select_from(credential.outerjoin(consumed, sa.true()))


_LOCK_BY_REFRESH_TOKEN = {bound: _lock_by_refresh_token(bound) for bound in (False, True)}
_LOCK_AND_CONSUME = {bound: _lock_and_consume(bound) for bound in (False, True)}
_CONSUME = _consume(_CLIENT_ID)

# The cap: keep the REFRESH_TOKENS_ROTATION_LIMIT - 1 newest usable tokens, retire the rest, so
# that the one inserted next is the limit's last.
_RETIRE_BEYOND_CAP = (
    sa.update(_tokens)
    .where(
        _tokens.c.id.in_(
            refresh_tokens_beyond_cap(
                _tokens.c,
                _ISSUED_AT,
                keep=REFRESH_TOKENS_ROTATION_LIMIT - 1,
                client_id=_CLIENT_ID,
            )
        )
    )
    .values(revoked_at=_ISSUED_AT)
)
_INSERT_TOKEN = sa.insert(_tokens).values(
    id=sa.bindparam("new_id", type_=_tokens.c.id.type),
    client_id=_CLIENT_ID,
    token_hash=sa.bindparam("new_hash", type_=_tokens.c.token_hash.type),
    parent_id=sa.bindparam("new_parent_id", type_=_tokens.c.parent_id.type),
    family_id=sa.bindparam("new_family_id", type_=_tokens.c.family_id.type),
    created_at=_ISSUED_AT,
    expires_at=sa.bindparam("family_expires_at", type_=_moment),
    used_at=None,
    revoked_at=None,
)


def _grants(user_credential: bool) -> sa.CompoundSelect[Any]:
    """(kind, key) rows of the roles and permissions held now. A tenant credential: its roles,
    its permissions and its roles' permissions. A user credential: the roles its user holds in
    the tenant, and their permissions."""
    role = sa.literal_column("'role'", sa.String).label("kind")
    permission = sa.literal_column("'permission'", sa.String).label("kind")
    role_key = _roles.c.key.label("key")
    permission_key = _permissions.c.key.label("key")
    granted_permissions = sa.select(permission, permission_key).join(
        role_permissions, role_permissions.c.permission_id == _permissions.c.id
    )
    if not user_credential:
        held = credential_roles.c.client_id == _CLIENT_ID
        return sa.union_all(
            sa.select(role, role_key)
            .join(credential_roles, credential_roles.c.role_id == _roles.c.id)
            .where(held),
            sa.select(permission, permission_key)
            .join(
                credential_permissions,
                credential_permissions.c.permission_id == _permissions.c.id,
            )
            .where(credential_permissions.c.client_id == _CLIENT_ID),
            granted_permissions.join(
                credential_roles, credential_roles.c.role_id == role_permissions.c.role_id
            ).where(held),
        )
    held = sa.and_(
        user_roles.c.user_id == sa.bindparam("user_id", type_=user_roles.c.user_id.type),
        user_roles.c.tenant_id == sa.bindparam("tenant_id", type_=user_roles.c.tenant_id.type),
    )
    return sa.union_all(
        sa.select(role, role_key).join(user_roles, user_roles.c.role_id == _roles.c.id).where(held),
        granted_permissions.join(
            user_roles, user_roles.c.role_id == role_permissions.c.role_id
        ).where(held),
    )


def _issue_and_read_grants(user_credential: bool) -> sa.Select[Any]:
    """PostgreSQL: make room under the cap, insert the new token and read the grants, in one
    statement. Its parts share one snapshot, so the retirement does not see the new token."""
    grants = _grants(user_credential).subquery("grants")
    retired = _RETIRE_BEYOND_CAP.cte("retired")
    inserted = _INSERT_TOKEN.cte("inserted")
    return sa.select(grants.c.kind, grants.c.key).add_cte(retired, inserted)


_GRANTS = {user: _grants(user) for user in (False, True)}
_ISSUE_AND_READ_GRANTS = {user: _issue_and_read_grants(user) for user in (False, True)}


# --- client authentication -------------------------------------------------------------------


@dataclass(frozen=True)
class _Authenticated:
    """A client whose secret matched, and the stored hash it matched."""

    client_id: str
    matched_hash: str
    previous_secret: bool  # the secret a rotation replaced, in its overlap


async def authenticate_client(
    session: AsyncSession,
    hasher: SecretHasher,
    limiter: RateLimiter,
    shape: SecretShape,
    presented: ClientSecret,
    *,
    address: str,
    now: datetime,
) -> str:
    """The clientId of a live credential whose secret (or previous secret, during a rotation's
    overlap) is `presented.secret`; InvalidClient otherwise, as `_verify_client` says. A match
    with the previous secret is recorded as its use (one more round trip, on that path only).
    """
    authenticated = await _verify_client(
        session, hasher, limiter, shape, presented, address=address, now=now
    )
    if authenticated.previous_secret:
        connection = await statement_connection(session)
        await connection.execute(_MARK_PREVIOUS_SECRET_USED, _marking(authenticated, now))
        await session.commit()  # hands the connection back (commits, behind a pooler)
    return authenticated.client_id


async def _verify_client(
    session: AsyncSession,
    hasher: SecretHasher,
    limiter: RateLimiter,
    shape: SecretShape,
    presented: ClientSecret,
    *,
    address: str,
    now: datetime,
) -> _Authenticated:
    """The credential whose secret is `presented.secret`; InvalidClient for an unknown clientId,
    a wrong secret, an expired credential or one whose tenant or user is deleted.

    The current secret is tried first, so an exchange with it costs one argon2 verification
    whether or not a rotation's overlap is running; the previous secret is tried only when the
    current one fails during an overlap. A wrong secret then costs two, no more (an unknown
    clientId costs one, against a dummy hash).

    A secret of this environment's shape with a wrong checksum is refused first, offline: no
    argon2, PostgreSQL or Redis work, counted as a failure in this process (refuse_offline).
    Otherwise the limiter admits the check first, and counts it as a failure when it fails (the
    rule is in domain/ratelimit.py). The read runs outside a transaction and gives its
    connection back (so this must be the session's first work) before the argon2 work, so no
    pooled connection waits on argon2. Round trips: 2 to Redis (1 on a failure), 1 to
    PostgreSQL.
    """
    client_id = presented.client_id
    if shape.refuses(presented.secret, CLIENT_SECRET):
        limiter.refuse_offline(limiter.clients, client_id, address=address, now=now)
        raise InvalidClient()
    async with limiter.checking(limiter.clients, client_id, address=address, now=now):
        connection = await statement_connection(session)
        row = (
            await connection.execute(_READ_SECRET, {"credential_id": client_id, "now": now})
        ).first()
        await session.rollback()  # hands the connection back (nothing to undo)
        if row is None:
            # Unknown clients verify against the dummy hash: they cost what a wrong secret costs.
            await hasher.verify(None, presented.secret)
            raise InvalidClient()
        matched_hash: str | None = row.secret_hash
        if not await hasher.verify(row.secret_hash, presented.secret):
            matched_hash = None
            previous = row.previous_secret_hash
            if previous is not None and await hasher.verify(previous, presented.secret):
                matched_hash = previous
        if matched_hash is None or (row.expires_at is not None and row.expires_at <= now):
            raise InvalidClient()
    return _Authenticated(
        client_id=client_id,
        matched_hash=matched_hash,
        previous_secret=matched_hash != row.secret_hash,
    )


def _marking(authenticated: _Authenticated, now: datetime) -> dict[str, Any]:
    return {
        "credential_id": authenticated.client_id,
        "matched_hash": authenticated.matched_hash,
        "now": now,
    }


# --- exchange and refresh --------------------------------------------------------------------


async def exchange_client_credentials(
    session: AsyncSession,
    hasher: SecretHasher,
    limiter: RateLimiter,
    shape: SecretShape,
    signer: Signer,
    issuer: str,
    presented: ClientSecret,
    *,
    address: str,
    now: datetime,
    clock: Clock = utcnow,
) -> TokenPair:
    """A JWT and the first refresh token of a new family, for a clientId and its secret.

    Round trips: _verify_client's (2 Redis, 1 PostgreSQL), then BEGIN, lock and read the
    credential, the cap with the insert and the grants (2 statements), and the caller's
    COMMIT: 5 to PostgreSQL in all (6 with a rotation's previous secret, whose use is noted).
    """
    authenticated = await _verify_client(
        session, hasher, limiter, shape, presented, address=address, now=now
    )
    client_id = authenticated.client_id
    connection = await session.connection()
    row = (
        await connection.execute(_LOCK_BY_CLIENT_ID, {"credential_id": client_id, "now": now})
    ).first()
    # Deleted, or expired, or its tenant or user deleted while argon2 ran: the same answer as
    # a wrong secret. So is a secret that a rotation, or the early end of its overlap, retired
    # while argon2 ran: the hash verified must still be one that exchanges, under the lock.
    if row is None or authenticated.matched_hash not in (
        row.secret_hash,
        row.previous_secret_hash,
    ):
        raise InvalidClient()
    if authenticated.previous_secret:
        await connection.execute(_MARK_PREVIOUS_SECRET_USED, _marking(authenticated, now))
    credential = _credential_of(row)
    if credential.expired(now):
        raise InvalidClient()
    if not credential.api_tokens_enabled:
        raise Disabled()
    family_id = str(uuid.uuid4())
    issued_at = _issue_time(now, clock)
    return await _issue(
        connection,
        shape,
        signer,
        issuer,
        credential,
        now,
        token_id=family_id,  # the first token of a family names it
        family_id=family_id,
        parent_id=None,
        expires_at=issued_at + timedelta(seconds=credential.refresh_token_seconds),
        issued_at=issued_at,
    )


async def rotate_refresh_token(
    session: AsyncSession,
    limiter: RateLimiter,
    shape: SecretShape,
    signer: Signer,
    issuer: str,
    refresh_token: str,
    *,
    address: str,
    now: datetime,
    client_id: str | None = None,
    clock: Clock = utcnow,
) -> TokenPair:
    """Retire `refresh_token` and hand out a new pair; the new refresh token keeps its
    family and the family's absolute expiry. With `client_id` (an authenticated OAuth
    client), the token must be that client's. A token whose credential, tenant or user is
    deleted is refused like an unknown one.

    A used token presented again is reuse (refresh-token rotation, RFC 9700): every usable token of
    its family is revoked and RefreshTokenReused raised; the caller commits that revocation.

    A token of this environment's shape with a wrong checksum is refused first, offline (no
    PostgreSQL or Redis work), and counted as a failure in this process (refuse_offline).

    Round trips: BEGIN, lock the credential and consume the token (1 statement), the cap with
    the insert and the grants (1 statement), and the caller's COMMIT: 4.
    """
    if shape.refuses(refresh_token, REFRESH_TOKEN):
        limiter.refuse_offline(
            limiter.clients, client_id or REFRESH_TOKEN_SUBJECT, address=address, now=now
        )
        raise InvalidGrant()
    token_hash = sha256_hex(refresh_token)
    bound = client_id is not None
    params: dict[str, Any] = {"presented_hash": token_hash, "now": now}
    if client_id is not None:
        params["credential_id"] = client_id
    connection = await session.connection()
    # The credential's lock first (see the module docstring); its row is gone, and its
    # refresh tokens with it (cascade), when the credential was deleted.
    if _postgresql(connection):
        row = (await connection.execute(_LOCK_AND_CONSUME[bound], params)).first()
        consumed = None if row is None or row.consumed_id is None else row
    else:
        row = (await connection.execute(_LOCK_BY_REFRESH_TOKEN[bound], params)).first()
        consumed = None
        if row is not None:
            consuming = {**params, "credential_id": row.client_id}
            taken = (await connection.execute(_CONSUME, consuming)).first()
            if taken is not None:
                consumed = _Consumed(taken.id, taken.family_id, taken.expires_at)
    if row is None:
        raise InvalidGrant()
    credential = _credential_of(row)
    if consumed is None:
        await _detect_reuse(session, credential, token_hash, now)
        raise InvalidGrant()
    # Rolled back by the caller on either error: the token stays usable for later.
    if credential.expired(now):
        raise InvalidGrant()
    if not credential.api_tokens_enabled:
        raise Disabled()
    return await _issue(
        connection,
        shape,
        signer,
        issuer,
        credential,
        now,
        token_id=str(uuid.uuid4()),
        family_id=consumed.consumed_family_id,
        parent_id=consumed.consumed_id,
        expires_at=consumed.consumed_expires_at,  # rotation never extends a family's life
        issued_at=_issue_time(now, clock),
    )


async def revoke_token(
    session: AsyncSession, shape: SecretShape, client_id: str, token: str, now: datetime
) -> AfterCommit:
    """RFC 7009: revoke a refresh token of `client_id`. An unknown token, or another client's,
    changes nothing and says nothing; a JWT is refused (UnsupportedTokenType). A token of this
    environment's shape with a wrong checksum was never issued: nothing is looked up.

    The revoked token's family is on the revocation feed (`refreshTokenFamily`) once committed;
    a token revoked, used or expired already adds nothing."""
    after = AfterCommit()
    if token.count(".") == 2:
        raise UnsupportedTokenType()
    if shape.refuses(token, REFRESH_TOKEN):
        return after
    connection = await session.connection()
    revoked = await connection.execute(
        _REVOKE, {"presented_hash": sha256_hex(token), "credential_id": client_id, "now": now}
    )
    for family_id, used_at, expires_at in revoked:
        # A token used (rotated) or expired already ended nothing: its family lives on, or
        # was over.
        if used_at is None and expires_at > now:
            after.revoke("refreshTokenFamily", familyId=family_id, clientId=client_id)
    return after


_REVOKE = (
    sa.update(_tokens)
    .where(
        _tokens.c.token_hash == _TOKEN_HASH,
        _tokens.c.client_id == _CLIENT_ID,
        _tokens.c.revoked_at.is_(None),
    )
    .values(revoked_at=_NOW)
    .returning(_tokens.c.family_id, _tokens.c.used_at, _tokens.c.expires_at)
)


# --- the rules they share --------------------------------------------------------------------


@dataclass(frozen=True)
class _Consumed:
    """The token a refresh consumed (the names match the columns of _LOCK_AND_CONSUME)."""

    consumed_id: str
    consumed_family_id: str
    consumed_expires_at: datetime


def _postgresql(connection: AsyncConnection) -> bool:
    return connection.dialect.name == "postgresql"


def _credential_of(row: sa.Row[Any]) -> _Credential:
    return _Credential(
        client_id=row.client_id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        created_by_user_id=row.created_by_user_id,
        metadata=row.metadata_json,
        expires_at=row.expires_at,
        api_tokens_enabled=row.api_tokens_enabled,
        token_seconds=row.default_token_expiration,
        refresh_token_seconds=row.default_refresh_token_expiration,
    )


def _issue_time(now: datetime, clock: Clock) -> datetime:
    """When a token is issued: read once the credential's lock is held, so that created_at
    follows the order in which the lock serialized issuance, and "oldest" means issued first
    (a request that started earlier may be served later)."""
    return max(now, clock())


async def _issue(
    connection: AsyncConnection,
    shape: SecretShape,
    signer: Signer,
    issuer: str,
    credential: _Credential,
    now: datetime,
    *,
    token_id: str,
    family_id: str,
    parent_id: str | None,
    expires_at: datetime,
    issued_at: datetime,
) -> TokenPair:
    """The one place a refresh token is born, and so the one place the cap is kept: at most
    REFRESH_TOKENS_ROTATION_LIMIT usable per credential; making room retires the oldest
    usable ones in this same transaction. Then the JWT, with the grants held now.

    The caller holds the credential's row lock, which serializes issuance per credential.
    Round trips: 1 on PostgreSQL (3 statements elsewhere).
    """
    value = shape.new(REFRESH_TOKEN)
    user_credential = credential.user_id is not None
    params: dict[str, Any] = {
        "credential_id": credential.client_id,
        "issued_at": issued_at,
        "new_id": token_id,
        "new_hash": sha256_hex(value),
        "new_parent_id": parent_id,
        "new_family_id": family_id,
        "family_expires_at": expires_at,
    }
    if user_credential:
        params.update(user_id=credential.user_id, tenant_id=credential.tenant_id)
    if _postgresql(connection):
        grants = (await connection.execute(_ISSUE_AND_READ_GRANTS[user_credential], params)).all()
    else:
        await connection.execute(_RETIRE_BEYOND_CAP, params)
        await connection.execute(_INSERT_TOKEN, params)
        grants = (await connection.execute(_GRANTS[user_credential], params)).all()
    return _token_pair(signer, issuer, credential, value, grants, now)


async def _detect_reuse(
    session: AsyncSession, credential: _Credential, token_hash: str, now: datetime
) -> None:
    """If the token presented was already used, revoke its family and raise RefreshTokenReused.

    Only the failure path pays these round trips (SELECT, UPDATE, the audit INSERT).
    """
    presented = (
        await session.execute(
            sa.select(_tokens.c.id, _tokens.c.family_id, _tokens.c.used_at).where(
                _tokens.c.token_hash == token_hash
            )
        )
    ).one_or_none()
    if presented is None or presented.used_at is None:
        return
    revoked = list(
        await session.scalars(
            sa.update(_tokens)
            .where(
                _tokens.c.family_id == presented.family_id,
                *usable_refresh_token(_tokens.c, sa.literal(now, _moment)),
            )
            .values(revoked_at=now)
            .returning(_tokens.c.id)
        )
    )
    # Recorded by the service itself: whoever presented the token is unknown.
    audit.record(
        session,
        None,
        REUSE_DETECTED,
        target_type="refresh_token_family",
        target_id=presented.family_id,
        now=now,
        tenant_id=credential.tenant_id,
        details={
            "clientId": credential.client_id,
            "presentedTokenId": presented.id,
            "revokedTokenIds": sorted(revoked),
        },
    )
    after = AfterCommit()
    if revoked:
        # Announced by the presentation that revoked the family; those after it (a replay
        # storm) find nothing left to revoke and add nothing to hold the credential's lock.
        events.announce(
            session,
            events.REFRESH_TOKEN_REUSE_DETECTED,
            {
                "clientId": credential.client_id,
                "tenantId": credential.tenant_id,
                "familyId": presented.family_id,
                "revokedRefreshTokenIds": sorted(revoked),
            },
            now,
        )
        after.revoke(
            "refreshTokenFamily", familyId=presented.family_id, clientId=credential.client_id
        )
    await session.flush()
    raise RefreshTokenReused(after)


def _token_pair(
    signer: Signer,
    issuer: str,
    credential: _Credential,
    refresh_token: str,
    grants: Sequence[sa.Row[Any]],
    now: datetime,
) -> TokenPair:
    """The pair of a credential: its JWT carries the roles and permissions it holds now."""
    roles: set[str] = set()
    permissions: set[str] = set()
    for grant in grants:
        (roles if grant.kind == "role" else permissions).add(grant.key)
    expires_at = now + timedelta(seconds=credential.token_seconds)
    claims: dict[str, Any] = {
        "type": TENANT_TOKEN if credential.user_id is None else USER_TOKEN,
        "sub": credential.client_id,
        "tenantId": credential.tenant_id,
    }
    if credential.user_id is not None:
        claims["userId"] = credential.user_id
    claims.update(
        roles=sorted(roles),
        permissions=sorted(permissions),
        metadata=credential.metadata,
        createdByUserId=credential.created_by_user_id,
        iss=issuer,
        iat=int(now.timestamp()),
        exp=int(expires_at.timestamp()),
        jti=str(uuid.uuid4()),
    )
    return TokenPair(
        claims=claims,
        signer=signer,
        refresh_token=refresh_token,
        expires_in=credential.token_seconds,
        expires_at=expires_at,
        client_id=credential.client_id,
    )
