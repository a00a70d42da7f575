"""Client-credential exchange, refresh-token rotation and revocation; the 100-token cap lives here.

Hot path: Core statements only, and the round trips are counted on each public function.
Lock order, everywhere: the credential's row first (SELECT ... FOR UPDATE), then its refresh
tokens. Exchange, refresh and reuse detection all follow it, so they never deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit
from domain.clock import utcnow
from domain.configuration import REFRESH_TOKENS_ROTATION_LIMIT
from domain.errors import Disabled, InvalidInput, Unauthenticated
from domain.keys import Signer
from domain.models import (
    ENVIRONMENT_ROW_ID,
    ClientCredential,
    Environment,
    Permission,
    RefreshToken,
    Role,
    credential_permissions,
    credential_roles,
    role_permissions,
    user_roles,
)
from domain.ratelimit import RateLimiter
from domain.secrets import SecretHasher, new_secret, sha256_hex

Clock = Callable[[], datetime]

USER_TOKEN = "userApiToken"
TENANT_TOKEN = "tenantApiToken"
EXCHANGE_TOKEN_TYPES = frozenset({USER_TOKEN, TENANT_TOKEN})
INVALID_CLIENT = "Invalid client credentials"
INVALID_REFRESH_TOKEN = "Invalid refresh token"
REUSE_DETECTED = "refresh_token.reuse_detected"


class InvalidClient(Unauthenticated):
    """Unknown clientId, wrong secret or expired credential: one answer for all three."""

    def __init__(self, message: str = INVALID_CLIENT) -> None:
        super().__init__(message)


class InvalidGrant(Unauthenticated):
    """A refresh token that is unknown, used, revoked, expired, or not the caller's."""

    def __init__(self) -> None:
        super().__init__(INVALID_REFRESH_TOKEN)


class RefreshTokenReused(InvalidGrant):
    """A used refresh token came back: its family is revoked, and that revocation must be
    committed although the request fails."""


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
    """What an exchange or a refresh hands out: a signed JWT and a fresh refresh token."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    expires_at: datetime


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


# --- client authentication -------------------------------------------------------------------


async def authenticate_client(
    session: AsyncSession,
    hasher: SecretHasher,
    limiter: RateLimiter,
    presented: ClientSecret,
    *,
    address: str,
    now: datetime,
) -> str:
    """The clientId of a live credential whose secret is `presented.secret`; InvalidClient
    for an unknown clientId, a wrong secret or an expired credential, at the same cost.

    Every attempt is counted by the limiter first. The read ends its transaction (so this must
    be the session's first work) before the argon2 work, so no pooled connection waits on
    argon2. Round trips: 1 to Redis; 3 to PostgreSQL (BEGIN, SELECT, ROLLBACK), plus the
    pool's pre-ping.
    """
    await limiter.count_attempt(client_id=presented.client_id, address=address, now=now)
    row = (
        await session.execute(
            sa.select(ClientCredential.secret_hash, ClientCredential.expires_at).where(
                ClientCredential.client_id == presented.client_id
            )
        )
    ).one_or_none()
    await session.rollback()
    # Unknown clients verify against the dummy hash: they cost what a wrong secret costs.
    matched = await hasher.verify(row.secret_hash if row is not None else None, presented.secret)
    if row is None or not matched or (row.expires_at is not None and row.expires_at <= now):
        raise InvalidClient()
    return presented.client_id


# --- exchange and refresh --------------------------------------------------------------------


async def exchange_client_credentials(
    session: AsyncSession,
    hasher: SecretHasher,
    limiter: RateLimiter,
    signer: Signer,
    issuer: str,
    presented: ClientSecret,
    *,
    address: str,
    now: datetime,
    clock: Clock = utcnow,
) -> TokenPair:
    """A JWT and the first refresh token of a new family, for a clientId and its secret.

    Round trips: authenticate_client's (1 Redis, 3 PostgreSQL), then BEGIN, lock and load the
    credential, its grants, the cap, the insert (4 statements), and the caller's COMMIT:
    9 to PostgreSQL in all, plus a pre-ping per connection checkout (2).
    """
    client_id = await authenticate_client(
        session, hasher, limiter, presented, address=address, now=now
    )
    credential = await _lock_credential(session, ClientCredential.client_id == client_id)
    # Deleted or expired while argon2 ran: the same answer as a wrong secret.
    if credential is None or credential.expired(now):
        raise InvalidClient()
    if not credential.api_tokens_enabled:
        raise Disabled()
    family_id = str(uuid.uuid4())
    issued_at = _issue_time(now, clock)
    refresh_token = await _issue_refresh_token(
        session,
        credential.client_id,
        token_id=family_id,  # the first token of a family names it
        family_id=family_id,
        parent_id=None,
        expires_at=issued_at + timedelta(seconds=credential.refresh_token_seconds),
        issued_at=issued_at,
    )
    return await _token_pair(session, signer, issuer, credential, refresh_token, now)


async def rotate_refresh_token(
    session: AsyncSession,
    signer: Signer,
    issuer: str,
    refresh_token: str,
    *,
    now: datetime,
    client_id: str | None = None,
    clock: Clock = utcnow,
) -> TokenPair:
    """Retire `refresh_token` and hand out a new pair; the new refresh token keeps its
    family and the family's absolute expiry. With `client_id` (an authenticated OAuth
    client), the token must be that client's.

    A used token presented again is reuse (RFC 9700 section 4.14.2): every usable token of
    its family is revoked and RefreshTokenReused raised; the caller commits that revocation.

    Round trips: BEGIN, lock and load the credential, consume the token, its grants, the cap,
    the insert (5 statements), and the caller's COMMIT: 7, plus the pool's pre-ping.
    """
    token_hash = sha256_hex(refresh_token)
    owner = (
        sa.select(RefreshToken.client_id)
        .where(RefreshToken.token_hash == token_hash)
        .scalar_subquery()
    )
    where = ClientCredential.client_id == owner
    if client_id is not None:
        where = sa.and_(where, ClientCredential.client_id == client_id)
    # The credential's lock first (see the module docstring); its row is gone, and its
    # refresh tokens with it (cascade), when the credential was deleted.
    credential = await _lock_credential(session, where)
    if credential is None:
        raise InvalidGrant()
    # One atomic statement decides which of concurrent refreshes of one token wins.
    consumed = (
        await session.execute(
            sa.update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.client_id == credential.client_id,
                *_usable(now),
            )
            .values(used_at=now)
            .returning(RefreshToken.id, RefreshToken.family_id, RefreshToken.expires_at)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if consumed is None:
        await _detect_reuse(session, credential, token_hash, now)
        raise InvalidGrant()
    # Rolled back by the caller on either error: the token stays usable for later.
    if credential.expired(now):
        raise InvalidGrant()
    if not credential.api_tokens_enabled:
        raise Disabled()
    new_refresh_token = await _issue_refresh_token(
        session,
        credential.client_id,
        token_id=str(uuid.uuid4()),
        family_id=consumed.family_id,
        parent_id=consumed.id,
        expires_at=consumed.expires_at,  # rotation never extends a family's life
        issued_at=_issue_time(now, clock),
    )
    return await _token_pair(session, signer, issuer, credential, new_refresh_token, now)


async def revoke_token(session: AsyncSession, client_id: str, token: str, now: datetime) -> None:
    """RFC 7009: revoke a refresh token of `client_id`. An unknown token, or another client's,
    changes nothing and says nothing; a JWT is refused (UnsupportedTokenType)."""
    if token.count(".") == 2:
        raise UnsupportedTokenType()
    await session.execute(
        sa.update(RefreshToken)
        .where(
            RefreshToken.token_hash == sha256_hex(token),
            RefreshToken.client_id == client_id,
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


# --- the rules they share --------------------------------------------------------------------


def _usable(now: datetime) -> list[sa.ColumnElement[bool]]:
    """A refresh token can still be exchanged: not used, not revoked, not expired."""
    return [
        RefreshToken.used_at.is_(None),
        RefreshToken.revoked_at.is_(None),
        RefreshToken.expires_at > now,
    ]


def _issue_time(now: datetime, clock: Clock) -> datetime:
    """When a token is issued: read once the credential's lock is held, so that created_at
    follows the order in which the lock serialized issuance, and "oldest" means issued first
    (a request that started earlier may be served later)."""
    return max(now, clock())


async def _issue_refresh_token(
    session: AsyncSession,
    client_id: str,
    *,
    token_id: str,
    family_id: str,
    parent_id: str | None,
    expires_at: datetime,
    issued_at: datetime,
) -> str:
    """The one place a refresh token is born, and so the one place the cap is kept: at most
    REFRESH_TOKENS_ROTATION_LIMIT usable per credential; making room retires the oldest
    usable ones in this same transaction.

    The caller holds the credential's row lock, which serializes issuance per credential.
    Round trips: 2 (the cap's UPDATE, the INSERT).
    """
    beyond_cap = (
        sa.select(RefreshToken.id)
        .where(RefreshToken.client_id == client_id, *_usable(issued_at))
        .order_by(RefreshToken.created_at.desc(), RefreshToken.id.desc())
        .offset(REFRESH_TOKENS_ROTATION_LIMIT - 1)
    )
    await session.execute(
        sa.update(RefreshToken)
        .where(RefreshToken.id.in_(beyond_cap))
        .values(revoked_at=issued_at)
        .execution_options(synchronize_session=False)
    )
    value = new_secret()
    await session.execute(
        sa.insert(RefreshToken).values(
            id=token_id,
            client_id=client_id,
            token_hash=sha256_hex(value),
            parent_id=parent_id,
            family_id=family_id,
            created_at=issued_at,
            expires_at=expires_at,
            used_at=None,
            revoked_at=None,
        )
    )
    return value


async def _detect_reuse(
    session: AsyncSession, credential: _Credential, token_hash: str, now: datetime
) -> None:
    """If the token presented was already used, revoke its family and raise RefreshTokenReused.

    Only the failure path pays these round trips (SELECT, UPDATE, the audit INSERT).
    """
    presented = (
        await session.execute(
            sa.select(RefreshToken.id, RefreshToken.family_id, RefreshToken.used_at).where(
                RefreshToken.token_hash == token_hash
            )
        )
    ).one_or_none()
    if presented is None or presented.used_at is None:
        return
    revoked = await session.scalars(
        sa.update(RefreshToken)
        .where(RefreshToken.family_id == presented.family_id, *_usable(now))
        .values(revoked_at=now)
        .returning(RefreshToken.id)
        .execution_options(synchronize_session=False)
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
    await session.flush()
    raise RefreshTokenReused()


async def _lock_credential(
    session: AsyncSession, where: sa.ColumnElement[bool]
) -> _Credential | None:
    """Lock the credential's row (not the table) and read it with the environment settings.

    Round trips: 1.
    """
    row = (
        await session.execute(
            sa.select(
                ClientCredential.client_id,
                ClientCredential.tenant_id,
                ClientCredential.user_id,
                ClientCredential.created_by_user_id,
                ClientCredential.metadata_json,
                ClientCredential.expires_at,
                Environment.api_tokens_enabled,
                Environment.default_token_expiration,
                Environment.default_refresh_token_expiration,
            )
            .join(Environment, Environment.id == ENVIRONMENT_ROW_ID)
            .where(where)
            .with_for_update(of=ClientCredential)
        )
    ).one_or_none()
    if row is None:
        return None
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


async def _grants(session: AsyncSession, credential: _Credential) -> tuple[list[str], list[str]]:
    """Role keys and permission keys held now, in one statement (round trips: 1).

    A tenant credential: its roles, its permissions and its roles' permissions. A user
    credential: the roles its user holds in the tenant, and their permissions.
    """
    role = sa.literal_column("'role'", sa.String).label("kind")
    permission = sa.literal_column("'permission'", sa.String).label("kind")
    if credential.user_id is None:
        held_roles = credential_roles.c.client_id == credential.client_id
        role_ids = credential_roles.c.role_id
        statement = sa.union_all(
            sa.select(role, Role.key).join(credential_roles, role_ids == Role.id).where(held_roles),
            sa.select(permission, Permission.key)
            .join(
                credential_permissions,
                credential_permissions.c.permission_id == Permission.id,
            )
            .where(credential_permissions.c.client_id == credential.client_id),
            sa.select(permission, Permission.key)
            .join(role_permissions, role_permissions.c.permission_id == Permission.id)
            .join(credential_roles, role_ids == role_permissions.c.role_id)
            .where(held_roles),
        )
    else:
        held_roles = sa.and_(
            user_roles.c.user_id == credential.user_id,
            user_roles.c.tenant_id == credential.tenant_id,
        )
        statement = sa.union_all(
            sa.select(role, Role.key)
            .join(user_roles, user_roles.c.role_id == Role.id)
            .where(held_roles),
            sa.select(permission, Permission.key)
            .join(role_permissions, role_permissions.c.permission_id == Permission.id)
            .join(user_roles, user_roles.c.role_id == role_permissions.c.role_id)
            .where(held_roles),
        )
    roles: set[str] = set()
    permissions: set[str] = set()
    for kind, key in await session.execute(statement):
        (roles if kind == "role" else permissions).add(key)
    return sorted(roles), sorted(permissions)


async def _token_pair(
    session: AsyncSession,
    signer: Signer,
    issuer: str,
    credential: _Credential,
    refresh_token: str,
    now: datetime,
) -> TokenPair:
    """Sign the JWT of a credential, with the roles and permissions it holds now."""
    roles, permissions = await _grants(session, credential)
    expires_at = now + timedelta(seconds=credential.token_seconds)
    claims: dict[str, Any] = {
        "type": TENANT_TOKEN if credential.user_id is None else USER_TOKEN,
        "sub": credential.client_id,
        "tenantId": credential.tenant_id,
    }
    if credential.user_id is not None:
        claims["userId"] = credential.user_id
    claims.update(
        roles=roles,
        permissions=permissions,
        metadata=credential.metadata,
        createdByUserId=credential.created_by_user_id,
        iss=issuer,
        iat=int(now.timestamp()),
        exp=int(expires_at.timestamp()),
        jti=str(uuid.uuid4()),
    )
    return TokenPair(
        access_token=signer.sign(claims),
        refresh_token=refresh_token,
        expires_in=credential.token_seconds,
        expires_at=expires_at,
    )
