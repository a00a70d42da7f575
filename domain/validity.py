"""The validity cache (Redis, or in-process memory) and validate(): is this token valid now?

Three layers answer, nearest first:

1. In-process: JWTs already verified, copies of cache entries, and each token's last answer
   while no invalidation has arrived since. A copy that says "valid" is used only while the
   pub/sub subscription is known to be current (a heartbeat sent less than FRESH_SECONDS ago has
   been answered, so every invalidation published before it has been applied here); a tombstone
   is used always, since what is deleted stays deleted.
2. Redis: every entry one validation needs, in one MGET. Entries are filled from PostgreSQL with
   `SET NX` and a TTL; deletions write tombstones and the M2M switch writes its flag with a plain
   `SET`, then announce the keys on a channel. A fill that raced a deletion therefore never
   overwrites its tombstone, and a flush only sends every read back to PostgreSQL.
3. PostgreSQL: the truth. One statement fills every entry a validation needs.

With `redis=None` the in-process layer is the whole cache (one process: `m2m dev`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from domain.db import database_unreachable
from domain.errors import Disabled, NotFound, Unauthenticated, Unavailable
from domain.keys import KeyRing
from domain.models import (
    ENVIRONMENT_ROW_ID,
    AccessToken,
    ClientCredential,
    Environment,
    Permission,
    Role,
    Tenant,
    User,
    access_token_roles,
    role_permissions,
    user_roles,
)

logger = logging.getLogger("m2m.validity")

T = TypeVar("T")

ACCESS_TOKEN_TYPES: Final = frozenset({"userAccessToken", "tenantAccessToken"})
CREDENTIAL_TYPES: Final = frozenset({"userApiToken", "tenantApiToken"})
ALL_TOKEN_TYPES: Final = ACCESS_TOKEN_TYPES | CREDENTIAL_TYPES
USER_TOKEN_TYPES: Final = frozenset({"userAccessToken", "userApiToken"})

# A filled entry lives this long. It is also how stale the roles and permissions reported for an
# access token may be after a role change; validity itself never waits for it.
ENTRY_TTL_SECONDS: Final = 60
# The M2M switch is re-read from PostgreSQL this often: it bounds how long two concurrent
# switches, or a switch whose cache write failed, can leave other processes on the old value.
ENV_TTL_SECONDS: Final = 5
# Tombstones outlive any fill that could have raced the deletion; ids of tokens are never reused.
TOMBSTONE_TTL_SECONDS: Final = 86_400

# Pub/sub heartbeat: in-process copies are trusted only while a ping sent less than
# FRESH_SECONDS ago has been answered (well inside the 100 ms promise).
HEARTBEAT_SECONDS: Final = 0.02
FRESH_SECONDS: Final = 0.05
# A ping unanswered this long means the subscription is dead: reconnect.
DEAD_AFTER_SECONDS: Final = 1.0
RECONNECT_SECONDS: Final = 0.2
CLOSE_ATTEMPTS: Final = 10
# Failed tombstone writes are retried this often by the listener.
RETRY_SECONDS: Final = 1.0

# No Redis call may take longer than this, whatever the client's own retry policy.
REDIS_CALL_SECONDS: Final = 0.3
# After a Redis failure, reads skip Redis for this long (PostgreSQL answers meanwhile).
BREAKER_SECONDS: Final = 1.0

LOCAL_MAX_ENTRIES: Final = 200_000
VERIFIED_MAX_TOKENS: Final = 100_000
PENDING_MAX: Final = 10_000

DISABLED_MESSAGE: Final = "Api tokens are disabled"
INVALID_MESSAGE: Final = "Token is not valid"
EXPIRED_MESSAGE: Final = "Token expired"

ENV_KEY: Final = "env"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

Table = Literal["at", "cc"]


# --- what the cache holds ---------------------------------------------------------------------


class _Deleted:
    """The tombstone of a token or credential: deleted, and ids are never reused."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Final = _Deleted()


@dataclass(frozen=True, slots=True)
class TokenRow:
    """What PostgreSQL said about one access token or credential row when the entry was filled.

    `tenant_incarnation` and `user_incarnation` name the tenant and user the row belonged to (their
    creation instants), so that a tenant or user deleted and created again under the same id
    does not bring back the tokens of the one deleted.
    """

    tenant_id: str
    user_id: str | None
    tenant_incarnation: int
    user_incarnation: int | None
    expires_us: int | None
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    filled_at: float

    @property
    def expires_at(self) -> datetime | None:
        return None if self.expires_us is None else _EPOCH + self.expires_us * _MICROSECOND


@dataclass(frozen=True, slots=True)
class Principal:
    """A tenant or user incarnation: alive, or deleted (a tombstone of that incarnation)."""

    incarnation: int
    alive: bool


Value = bool | TokenRow | Principal | _Deleted


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def incarnation(created_at: datetime) -> int:
    """A tenant's or user's creation instant in microseconds: tells apart two of the same id."""
    return _microseconds(created_at)


def _permanent(value: Value) -> bool:
    """Facts that can never become false: a deleted token, a deleted incarnation."""
    return value is DELETED or (isinstance(value, Principal) and not value.alive)


def _token_key(table: Table, token_id: str) -> str:
    return f"{table}:{token_id}"


def _tenant_key(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def _user_key(user_id: str) -> str:
    return f"user:{user_id}"


def _encode(value: Value) -> bytes:
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if value is DELETED:
        return b"-"
    if isinstance(value, Principal):
        return f"{'+' if value.alive else '-'}{value.incarnation}".encode()
    assert isinstance(value, TokenRow)
    return json.dumps(
        {
            "t": value.tenant_id,
            "u": value.user_id,
            "ti": value.tenant_incarnation,
            "ui": value.user_incarnation,
            "x": value.expires_us,
            "r": value.roles,
            "p": value.permissions,
            "f": value.filled_at,
        },
        separators=(",", ":"),
    ).encode()


def _decode(key: str, blob: bytes | None) -> Value | None:
    """The value stored under `key`; None when absent or unreadable (a miss, never a verdict)."""
    if blob is None:
        return None
    try:
        if key == ENV_KEY:
            return {b"1": True, b"0": False}.get(blob)
        if key.startswith(("tenant:", "user:")):
            sign, number = blob[:1], int(blob[1:])
            return Principal(number, alive=True) if sign == b"+" else Principal(number, False)
        if blob == b"-":
            return DELETED
        data = json.loads(blob)
        return TokenRow(
            tenant_id=data["t"],
            user_id=data["u"],
            tenant_incarnation=data["ti"],
            user_incarnation=data["ui"],
            expires_us=data["x"],
            roles=tuple(data["r"]),
            permissions=tuple(data["p"]),
            filled_at=float(data["f"]),
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable validity cache entry under %s: treated as a miss", key)
        return None


# --- answers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validated:
    """A token valid now, and who it speaks for."""

    type: str
    sub: str
    tenant_id: str
    user_id: str | None
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    expires_at: datetime | None
    claims: Mapping[str, Any]

    @property
    def is_access_token(self) -> bool:
        return self.type in ACCESS_TOKEN_TYPES


@dataclass(frozen=True)
class AccessTokenGrants:
    """An access token valid now, with the roles and permissions it carries now."""

    id: str
    tenant_id: str
    user_id: str | None
    roles: tuple[str, ...]
    permissions: tuple[str, ...]
    expires_at: datetime | None


@dataclass(frozen=True)
class _Subject:
    """The token a validation is about: its row, and the tenant and user it must belong to."""

    table: Table
    token_id: str
    tenant_id: str
    user_id: str | None

    @property
    def token_key(self) -> str:
        return _token_key(self.table, self.token_id)

    def cache_keys(self) -> list[str]:
        keys = [ENV_KEY, self.token_key, _tenant_key(self.tenant_id)]
        if self.user_id is not None:
            keys.append(_user_key(self.user_id))
        return keys


class _NeedDatabase(Exception):
    """What the cache holds is missing or does not settle the question: ask PostgreSQL."""


class _Invalid(Exception):
    def __init__(self, reason: Literal["disabled", "gone", "expired"]) -> None:
        super().__init__(reason)
        self.reason = reason


def _judge(
    subject: _Subject, values: Mapping[str, Value], now: datetime, *, final: bool
) -> TokenRow:
    """The row of a token valid now; _Invalid if it is not; _NeedDatabase if the entries do not
    settle it (missing, or naming another incarnation) and `final` is False.

    Definite answers come first, so that a tombstone or a disabled environment needs no fill.
    """
    unsettled = False
    row = values.get(subject.token_key)
    if row is DELETED:
        raise _Invalid("gone")
    enabled = values.get(ENV_KEY)
    if enabled is False:
        raise _Invalid("disabled")
    if enabled is None or row is None:
        unsettled = True
    if isinstance(row, TokenRow):
        if row.tenant_id != subject.tenant_id or row.user_id != subject.user_id:
            raise _Invalid("gone")
        if row.expires_us is not None and row.expires_us <= _microseconds(now):
            raise _Invalid("expired")
        if row.filled_at + ENTRY_TTL_SECONDS <= now.timestamp():
            unsettled = True  # its roles are older than promised: refill
        owners = [(_tenant_key(row.tenant_id), row.tenant_incarnation)]
        if row.user_id is not None:
            owners.append((_user_key(row.user_id), row.user_incarnation or 0))
        for key, expected in owners:
            owner = values.get(key)
            if isinstance(owner, Principal) and owner.incarnation == expected:
                if not owner.alive:
                    raise _Invalid("gone")
            else:
                unsettled = True
    if unsettled:
        if final:
            raise _Invalid("gone")
        raise _NeedDatabase()
    assert isinstance(row, TokenRow)
    return row


# --- PostgreSQL -------------------------------------------------------------------------------


def _grants_of_access_token(token_id: str) -> sa.Subquery:
    """(role key, permission key) rows of an access token: a tenant token's own roles, or the
    roles its user holds now in the token's tenant."""
    token = aliased(AccessToken, name="granting_token")
    given = (
        sa.select(access_token_roles.c.role_id)
        .where(access_token_roles.c.token_id == token_id)
        .correlate(None)
    )
    held = (
        sa.select(user_roles.c.role_id)
        .join(
            token,
            sa.and_(
                token.user_id == user_roles.c.user_id, token.tenant_id == user_roles.c.tenant_id
            ),
        )
        .where(token.id == token_id)
        .correlate(None)
    )
    return (
        sa.select(Role.key.label("role_key"), Permission.key.label("permission_key"))
        .select_from(Role)
        .outerjoin(role_permissions, role_permissions.c.role_id == Role.id)
        .outerjoin(Permission, Permission.id == role_permissions.c.permission_id)
        .where(sa.or_(Role.id.in_(given), Role.id.in_(held)))
        .subquery("grants")
    )


def _fill_statement(table: Table | None, token_id: str) -> sa.Select[Any]:
    """One statement for every entry a validation needs: the switch, the row, its tenant and
    user, and (access tokens) its roles and permissions. `table` None: the switch alone."""
    if table is None:
        return sa.select(Environment.api_tokens_enabled).where(Environment.id == ENVIRONMENT_ROW_ID)
    row: Any = AccessToken if table == "at" else ClientCredential
    row_id = AccessToken.id if table == "at" else ClientCredential.client_id
    columns: list[Any] = [
        Environment.api_tokens_enabled,
        row_id.label("row_id"),
        row.tenant_id,
        row.user_id,
        row.expires_at,
        Tenant.created_at.label("tenant_created_at"),
        User.created_at.label("user_created_at"),
    ]
    statement = (
        sa.select(*columns)
        .select_from(Environment)
        .outerjoin(row, row_id == token_id)
        .outerjoin(Tenant, sa.and_(Tenant.id == row.tenant_id, _alive(Tenant)))
        .outerjoin(User, sa.and_(User.id == row.user_id, _alive(User)))
        .where(Environment.id == ENVIRONMENT_ROW_ID)
    )
    if table == "at":
        grants = _grants_of_access_token(token_id)
        statement = statement.add_columns(grants.c.role_key, grants.c.permission_key).outerjoin(
            grants, sa.true()
        )
    return statement


def _filled_values(
    table: Table | None, token_id: str, rows: Sequence[sa.Row[Any]], now: datetime
) -> dict[str, Value]:
    if not rows:
        raise RuntimeError("the environment row is missing: run `m2m migrate`")
    first = rows[0]
    values: dict[str, Value] = {ENV_KEY: bool(first.api_tokens_enabled)}
    if table is None:
        return values
    key = _token_key(table, token_id)
    if (
        first.row_id is None
        or first.tenant_created_at is None
        or (first.user_id is not None and first.user_created_at is None)
    ):
        # Gone, or its tenant or user deleted (whose cascade may still be removing the row).
        values[key] = DELETED
        return values
    roles: set[str] = set()
    permissions: set[str] = set()
    if table == "at":
        for item in rows:
            if item.role_key is not None:
                roles.add(item.role_key)
            if item.permission_key is not None:
                permissions.add(item.permission_key)
    tenant_incarnation = incarnation(first.tenant_created_at)
    user_incarnation = None if first.user_created_at is None else incarnation(first.user_created_at)
    values[key] = TokenRow(
        tenant_id=first.tenant_id,
        user_id=first.user_id,
        tenant_incarnation=tenant_incarnation,
        user_incarnation=user_incarnation,
        expires_us=None if first.expires_at is None else _microseconds(first.expires_at),
        roles=tuple(sorted(roles)),
        permissions=tuple(sorted(permissions)),
        filled_at=now.timestamp(),
    )
    values[_tenant_key(first.tenant_id)] = Principal(tenant_incarnation, alive=True)
    if first.user_id is not None and user_incarnation is not None:
        values[_user_key(first.user_id)] = Principal(user_incarnation, alive=True)
    return values


def _valid_now(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(AccessToken.expires_at.is_(None), AccessToken.expires_at > now)


async def active_access_token_ids(
    session: AsyncSession, *, user_tokens: bool, tenant_id: str | None, now: datetime
) -> str:
    """The JSON array of the ids of the access tokens valid now, of one tenant or of all, built
    by the database in one statement (100,000 ids: no Python object per row).

    "Valid now" is: exists, has not expired, and its tenant (and user) is not deleted; the M2M
    switch is the caller's to check.
    """
    kind = AccessToken.user_id.is_not(None) if user_tokens else AccessToken.user_id.is_(None)
    if session.get_bind().dialect.name == "postgresql":
        array: sa.ColumnElement[Any] = sa.cast(sa.func.json_agg(AccessToken.id), sa.Text)
    else:
        array = sa.func.json_group_array(AccessToken.id)
    statement = (
        sa.select(array)
        .join(Tenant, sa.and_(Tenant.id == AccessToken.tenant_id, _alive(Tenant)))
        .outerjoin(User, sa.and_(User.id == AccessToken.user_id, _alive(User)))
        .where(kind, _valid_now(now), sa.or_(AccessToken.user_id.is_(None), User.id.is_not(None)))
    )
    if tenant_id is not None:
        statement = statement.where(AccessToken.tenant_id == tenant_id)
    ids: str | None = await session.scalar(statement)
    return ids or "[]"  # json_agg of no rows is NULL


# --- reconcile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Alive:
    """A token row that exists in PostgreSQL, with a tenant (and user) not deleted."""

    tenant_id: str
    user_id: str | None
    expires_at: datetime | None


_DROP: Final = object()


def _repair(key: str, cached: Value, truth: Value | _Alive | None) -> Value | object | None:
    """None if the entry agrees with the truth; else the tombstone to write, or _DROP."""
    if key == ENV_KEY:
        return None if cached == truth else truth
    if key.startswith(("tenant:", "user:")):
        assert isinstance(cached, Principal)
        alive = isinstance(truth, Principal) and truth.incarnation == cached.incarnation
        if cached.alive and not alive:
            return Principal(cached.incarnation, alive=False)
        if not cached.alive and alive:
            return _DROP
        return None
    if cached is DELETED:
        return _DROP if isinstance(truth, _Alive) else None
    if not isinstance(truth, _Alive):
        return DELETED
    assert isinstance(cached, TokenRow)
    expires_us = None if truth.expires_at is None else _microseconds(truth.expires_at)
    if (cached.tenant_id, cached.user_id, cached.expires_us) != (
        truth.tenant_id,
        truth.user_id,
        expires_us,
    ):
        return _DROP
    return None


def _alive(model: Any) -> sa.ColumnElement[bool]:
    """Not deleted: a tenant or user whose deletion is still cascading is gone already."""
    deleted_at: sa.ColumnElement[Any] = model.deleted_at
    return deleted_at.is_(None)


# --- the in-process layer ---------------------------------------------------------------------


class _LocalEntries:
    """Copies of cache entries, each with a deadline on the event loop's clock; bounded."""

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[str, tuple[Value, float]] = {}
        self._max = max_entries

    def get(self, key: str, clock: float, *, positives: bool) -> Value | None:
        item = self._entries.get(key)
        if item is None:
            return None
        value, deadline = item
        if clock >= deadline:
            del self._entries[key]
            return None
        if not positives and not _permanent(value):
            return None
        return value

    def peek(self, key: str) -> Value | None:
        item = self._entries.get(key)
        return None if item is None else item[0]

    def put(self, key: str, value: Value, deadline: float) -> None:
        if key not in self._entries and len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, deadline)

    def drop(self, key: str, *, keep_token_tombstone: bool) -> None:
        item = self._entries.get(key)
        if item is not None and not (keep_token_tombstone and item[0] is DELETED):
            del self._entries[key]

    def keys(self) -> list[str]:
        return list(self._entries)

    def drop_positives(self) -> None:
        self._entries = {k: item for k, item in self._entries.items() if _permanent(item[0])}

    def clear(self) -> None:
        self._entries.clear()


@dataclass(slots=True)
class _Known:
    """A JWT this process has verified, and (while nothing has changed since) its last answer."""

    claims: dict[str, Any]
    not_before: float
    not_after: float
    answer: Validated | None = None
    # The answer stands while no invalidation has arrived (generation), the in-process copies it
    # came from would still be used (event-loop deadline) and the token, its row and its roles
    # are still in date (wall-clock seconds).
    generation: int = -1
    answer_deadline: float = -math.inf
    answer_not_after: float = -math.inf


class _KnownTokens:
    """JWTs whose signature and claims this process has checked, by SHA-256 of the token; bounded.

    Signature checks cost most of a validation; their outcome depends only on the token, the
    published keys (a key stays published while any token it signed can be valid) and the time,
    so a hit rechecks the time window and the type, and anything else goes to KeyRing.verify.
    """

    def __init__(self, max_tokens: int) -> None:
        self._tokens: dict[bytes, _Known] = {}
        self._max = max_tokens

    def get(self, digest: bytes) -> _Known | None:
        return self._tokens.get(digest)

    def add(self, digest: bytes, claims: dict[str, Any]) -> _Known:
        known = _Known(
            claims=claims,
            not_before=max(float(claims["iat"]), float(claims.get("nbf", -math.inf))),
            not_after=float(claims["exp"]) if "exp" in claims else math.inf,
        )
        if digest not in self._tokens and len(self._tokens) >= self._max:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[digest] = known
        return known


# --- the cache --------------------------------------------------------------------------------


class ValidityCache:
    """Answers "is this token valid now?" from memory, Redis or PostgreSQL, and takes the
    invalidations that committed changes cause.

    `redis` None means the in-process memory backend (one process only: `m2m dev`). Without
    `start()` (Celery workers) it reads and writes Redis but keeps no in-process copies.
    """

    def __init__(
        self,
        *,
        redis: Any | None,
        sessions: async_sessionmaker[AsyncSession],
        prefix: str,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._key_prefix = f"{prefix}v:"
        self._channel = f"{prefix}v:changes"
        self._local = _LocalEntries(LOCAL_MAX_ENTRIES)
        self._known = _KnownTokens(VERIFIED_MAX_TOKENS)
        # Bumped by every invalidation applied here: a read that saw it change keeps no copy.
        self._generation = 0
        # Event-loop time of the newest answered heartbeat's ping; -inf: not listening.
        self._fresh_as_of = -math.inf
        self._subscribed = False
        self._subscription_broken = False
        self._closing = False
        self._listener: asyncio.Task[None] | None = None
        self._redis_down_until = -math.inf
        self._env_from_database_until = -math.inf
        # Tombstones whose Redis write failed, retried by the listener.
        self._pending: dict[str, Value] = {}

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin listening for invalidations pushed by other processes."""
        if self._redis is None or self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen_forever(), name="validity-listener")

    async def close(self) -> None:
        """Stop listening."""
        listener, self._listener = self._listener, None
        self._closing = True
        if listener is not None:
            # redis-py's own read timeouts can absorb a cancellation that lands as one of them
            # expires; the flag ends the loop anyway, and the cancel is repeated until it does.
            for _ in range(CLOSE_ATTEMPTS):
                listener.cancel()
                done, _pending = await asyncio.wait({listener}, timeout=RECONNECT_SECONDS)
                if done:
                    break
            else:
                logger.warning("the validity listener did not stop")
            if listener.done() and not listener.cancelled() and listener.exception() is not None:
                logger.warning("the validity listener failed", exc_info=listener.exception())
        self._closing = False
        self._lose_subscription()

    @property
    def listening(self) -> bool:
        """Whether in-process copies may answer now (always, for the memory backend)."""
        return self._fresh(self._clock())

    @property
    def current_as_of(self) -> float:
        """Event-loop time before which every published invalidation has been applied here
        (-inf while not listening)."""
        return math.inf if self._redis is None else self._fresh_as_of

    @property
    def reading_redis(self) -> bool:
        """Whether reads go to Redis now: False without Redis, and while the breaker is open."""
        return self._redis is not None and self._clock() >= self._redis_down_until

    # --- questions --------------------------------------------------------------------------

    async def validate(
        self, keyring: KeyRing, token: str, types: Collection[str], now: datetime
    ) -> Validated:
        """The token, if it is one of `types` and valid now; Unauthenticated otherwise.

        Unavailable when neither Redis nor PostgreSQL can answer: never a guess.
        """
        digest = hashlib.sha256(token.encode()).digest()
        stamp = now.timestamp()
        known = self._known.get(digest)
        if known is not None:
            answer = known.answer
            if (
                answer is not None
                and known.generation == self._generation
                and answer.type in types
                and known.not_before <= stamp < known.answer_not_after
            ):
                clock = self._clock()
                if clock < known.answer_deadline and self._fresh(clock):
                    return answer
            if not (known.claims["type"] in types and known.not_before <= stamp < known.not_after):
                known = None
        if known is None:
            known = self._known.add(digest, await keyring.verify(token, types, now))
        claims = known.claims
        generation = self._generation
        subject = _subject_of(claims)
        row = await self._settle(subject, now, invalid=_unauthenticated)
        kind = claims["type"]
        if kind in ACCESS_TOKEN_TYPES:
            roles, permissions = row.roles, row.permissions
            expires_at = row.expires_at
        else:
            roles = _keys_claim(claims, "roles")
            permissions = _keys_claim(claims, "permissions")
            expires_at = _earliest(_from_timestamp(claims.get("exp")), row.expires_at)
        answer = Validated(
            type=kind,
            sub=subject.token_id,
            tenant_id=subject.tenant_id,
            user_id=subject.user_id,
            roles=roles,
            permissions=permissions,
            expires_at=expires_at,
            claims=claims,
        )
        if generation == self._generation and (self._subscribed or self._redis is None):
            known.answer = answer
            known.generation = generation
            known.answer_deadline = self._clock() + ENV_TTL_SECONDS
            known.answer_not_after = min(
                known.not_after,
                math.inf if expires_at is None else expires_at.timestamp(),
                row.filled_at + ENTRY_TTL_SECONDS,
            )
        return answer

    async def access_token(
        self, token_id: str, *, user_token: bool, tenant_id: str | None, now: datetime
    ) -> AccessTokenGrants:
        """One access token of the kind asked, valid now, with its current roles and permissions.

        Disabled while M2M is off; NotFound if unknown, of the other kind, of another tenant than
        the one named, expired or deleted.
        """
        key = _token_key("at", token_id)
        values = await self._cached([ENV_KEY, key], now)
        if values.get(ENV_KEY) is False:
            raise Disabled()
        row = values.get(key)
        if row is DELETED:
            raise NotFound(f"Access token {token_id} not found")
        if not isinstance(row, TokenRow):
            values = await self._fill("at", token_id, now)
            row = values[key]
        if not isinstance(row, TokenRow):
            if values[ENV_KEY] is False:
                raise Disabled()
            raise NotFound(f"Access token {token_id} not found")
        if (row.user_id is not None) != user_token or (
            tenant_id is not None and tenant_id != row.tenant_id
        ):
            raise NotFound(f"Access token {token_id} not found")
        subject = _Subject("at", token_id, row.tenant_id, row.user_id)
        settled = await self._settle(subject, now, invalid=_not_found(token_id), known=values)
        return AccessTokenGrants(
            id=token_id,
            tenant_id=settled.tenant_id,
            user_id=settled.user_id,
            roles=settled.roles,
            permissions=settled.permissions,
            expires_at=settled.expires_at,
        )

    async def require_m2m_switch_on(self, now: datetime) -> None:
        """Disabled unless M2M is on."""
        values = await self._cached([ENV_KEY], now)
        if ENV_KEY not in values:
            values = await self._fill(None, "", now)
        if values[ENV_KEY] is not True:
            raise Disabled()

    # --- invalidations (call after the commit that made them true) ---------------------------

    async def invalidate_tokens(
        self, *, access_token_ids: Iterable[str] = (), client_ids: Iterable[str] = ()
    ) -> None:
        """Deleted access tokens and credentials: invalid here at once, everywhere soon."""
        keys = [_token_key("at", i) for i in access_token_ids]
        keys += [_token_key("cc", i) for i in client_ids]
        await self._bury({key: DELETED for key in keys})

    async def invalidate_user(self, user_id: str, created_at: datetime) -> None:
        """A deleted user: every token of it, whichever kind, is invalid."""
        await self._bury({_user_key(user_id): Principal(incarnation(created_at), alive=False)})

    async def invalidate_tenant(self, tenant_id: str, created_at: datetime) -> None:
        """A deleted tenant: every token in it is invalid."""
        await self._bury({_tenant_key(tenant_id): Principal(incarnation(created_at), alive=False)})

    async def forget_user(self, user_id: str) -> None:
        """A user created under an id used before: its tombstone names the old one; drop it."""
        await self._forget([_user_key(user_id)])

    async def forget_tenant(self, tenant_id: str) -> None:
        """A tenant created under an id used before: drop the old one's tombstone."""
        await self._forget([_tenant_key(tenant_id)])

    async def evict_tokens(
        self, *, access_token_ids: Iterable[str] = (), client_ids: Iterable[str] = ()
    ) -> None:
        """Expired tokens: drop their entries (a refill reads the expiry from PostgreSQL)."""
        keys = [_token_key("at", i) for i in access_token_ids]
        keys += [_token_key("cc", i) for i in client_ids]
        if keys:
            await self._forget(keys)

    async def reconcile(self, now: datetime, batch: int = 1000) -> dict[str, int]:
        """Compare every entry with PostgreSQL and repair those that disagree: a live entry of
        something deleted becomes a tombstone; any other disagreement is dropped (and refilled
        on the next read). Each batch is read from the cache before PostgreSQL, so a deletion
        committed meanwhile is never undone: its tombstone is written after its commit.

        Unavailable (raised) when Redis cannot be read: the job fails and is retried.
        """
        checked = repaired = 0
        for keys in await self._all_keys(batch):
            cached = await self._read_for_reconcile(keys)
            truth = await self._truth(list(cached), now)
            bury: dict[str, Value] = {}
            drop: list[str] = []
            for key, value in cached.items():
                checked += 1
                verdict = _repair(key, value, truth.get(key))
                if verdict is _DROP:
                    drop.append(key)
                elif isinstance(verdict, bool | Principal | _Deleted):
                    bury[key] = verdict
            if ENV_KEY in bury:
                await self.set_m2m_switch(bool(bury.pop(ENV_KEY)))
                repaired += 1
            if bury:
                await self._bury(bury)
            if drop:
                await self._forget(drop)
            repaired += len(bury) + len(drop)
        return {"checked": checked, "repaired": repaired}

    async def _all_keys(self, batch: int) -> list[list[str]]:
        if self._redis is None:
            keys = list(self._local.keys())
        else:
            redis = self._redis
            offset = len(self._key_prefix)
            keys = []
            try:
                async for raw in redis.scan_iter(match=f"{self._key_prefix}*", count=batch):
                    key = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if key != self._channel:
                        keys.append(key[offset:])
            except (OSError, TimeoutError, RedisError) as error:
                raise Unavailable("the validity cache cannot be read") from error
        return [keys[i : i + batch] for i in range(0, len(keys), batch)]

    async def _read_for_reconcile(self, keys: list[str]) -> dict[str, Value]:
        if self._redis is None:
            peeked = {key: self._local.peek(key) for key in keys}
            return {key: value for key, value in peeked.items() if value is not None}
        try:
            blobs = await self._redis.mget([self._key_prefix + key for key in keys])
        except (OSError, TimeoutError, RedisError) as error:
            raise Unavailable("the validity cache cannot be read") from error
        decoded = {key: _decode(key, blob) for key, blob in zip(keys, blobs, strict=True)}
        return {key: value for key, value in decoded.items() if value is not None}

    async def _truth(self, keys: list[str], now: datetime) -> dict[str, Value | _Alive]:
        """What PostgreSQL says about each key: absent from the result means "gone"."""
        by_kind: dict[str, list[str]] = {}
        for key in keys:
            kind, _, ident = key.partition(":")
            by_kind.setdefault(kind, []).append(ident)
        truth: dict[str, Value | _Alive] = {}
        async with self._sessions() as session:
            if ENV_KEY in by_kind:
                enabled = await session.scalar(_fill_statement(None, ""))
                truth[ENV_KEY] = bool(enabled)
            tables: tuple[tuple[Table, Any, Any], ...] = (
                ("at", AccessToken, AccessToken.id),
                ("cc", ClientCredential, ClientCredential.client_id),
            )
            for table, row, id_column in tables:
                ids = by_kind.get(table)
                if not ids:
                    continue
                rows = await session.execute(
                    sa.select(id_column, row.tenant_id, row.user_id, row.expires_at)
                    .join(Tenant, sa.and_(Tenant.id == row.tenant_id, _alive(Tenant)))
                    .outerjoin(User, sa.and_(User.id == row.user_id, _alive(User)))
                    .where(id_column.in_(ids), sa.or_(row.user_id.is_(None), User.id.is_not(None)))
                )
                for ident, tenant_id, user_id, expires_at in rows:
                    truth[_token_key(table, ident)] = _Alive(tenant_id, user_id, expires_at)
            principals: tuple[tuple[str, Any], ...] = (("tenant", Tenant), ("user", User))
            for kind, principal in principals:
                ids = by_kind.get(kind)
                if ids:
                    found = await session.execute(
                        sa.select(principal.id, principal.created_at).where(
                            principal.id.in_(ids), _alive(principal)
                        )
                    )
                    for ident, created_at in found:
                        truth[f"{kind}:{ident}"] = Principal(incarnation(created_at), alive=True)
        return truth

    async def set_m2m_switch(self, enabled: bool) -> None:
        """The committed value of apiTokensEnabled: in effect here at once, everywhere soon."""
        self._generation += 1
        self._local.drop(ENV_KEY, keep_token_tombstone=False)
        if self._redis is None:
            return
        written = await self._write({ENV_KEY: (enabled, ENV_TTL_SECONDS)}, [ENV_KEY])
        if not written:
            # Redis may still hold the old value for up to ENV_TTL_SECONDS: until then this
            # process asks PostgreSQL.
            self._env_from_database_until = self._clock() + ENV_TTL_SECONDS
            logger.error(
                "could not write apiTokensEnabled=%s to the validity cache; other API processes"
                " follow within %s s",
                enabled,
                ENV_TTL_SECONDS,
            )

    async def forget_all(self) -> None:
        """Drop every entry, in Redis and in every process; later reads refill from PostgreSQL."""
        self._generation += 1
        self._local.clear()
        self._pending.clear()
        if self._redis is None:
            return
        redis = self._redis

        async def delete_all() -> None:
            batch: list[Any] = []
            async for key in redis.scan_iter(match=f"{self._key_prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await redis.delete(*batch)
                    batch = []
            if batch:
                await redis.delete(*batch)
            await redis.publish(self._channel, "*")

        await delete_all()

    # --- reading ------------------------------------------------------------------------------

    async def _settle(
        self,
        subject: _Subject,
        now: datetime,
        *,
        invalid: Callable[[_Invalid], Exception],
        known: Mapping[str, Value] | None = None,
    ) -> TokenRow:
        """The row of the subject if the token is valid now; `invalid(reason)` is raised if not."""
        try:
            wanted = [key for key in subject.cache_keys() if known is None or key not in known]
            values = dict(known or {})
            values.update(await self._cached(wanted, now))
            try:
                return _judge(subject, values, now, final=False)
            except _NeedDatabase:
                values = await self._fill(subject.table, subject.token_id, now)
                return _judge(subject, values, now, final=True)
        except _Invalid as verdict:
            raise invalid(verdict) from None

    async def _cached(self, keys: Sequence[str], now: datetime) -> dict[str, Value]:
        """What the in-process layer, then Redis, hold for `keys`; missing keys are left out."""
        clock = self._clock()
        positives = self._fresh(clock)
        generation = self._generation
        found: dict[str, Value] = {}
        missing: list[str] = []
        for key in keys:
            if key == ENV_KEY and clock < self._env_from_database_until:
                continue
            value = self._local.get(key, clock, positives=positives)
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        if not missing or self._redis is None or clock < self._redis_down_until:
            return found
        redis = self._redis
        blobs = await self._redis_call(lambda: redis.mget([self._key_prefix + k for k in missing]))
        if blobs is None:
            return found
        stamp = now.timestamp()
        for key, blob in zip(missing, blobs, strict=True):
            value = _decode(key, blob)
            if value is not None:
                found[key] = value
                self._remember(key, value, generation, stamp)
        return found

    async def _fill(self, table: Table | None, token_id: str, now: datetime) -> dict[str, Value]:
        """Every entry a validation needs, from PostgreSQL; stored in Redis with SET NX."""
        generation = self._generation
        statement = _fill_statement(table, token_id)
        try:
            async with self._sessions() as session:
                # No transaction: one statement reads a consistent snapshot on its own.
                connection = await session.connection(
                    execution_options={"isolation_level": "AUTOCOMMIT"}
                )
                rows = list(await connection.execute(statement))
        except Exception as error:
            if database_unreachable(error):
                raise Unavailable("Service temporarily unavailable") from error
            raise
        values = _filled_values(table, token_id, rows, now)
        stamp = now.timestamp()
        for key, value in values.items():
            self._remember(key, value, generation, stamp)
        if self._redis is not None and self._clock() >= self._redis_down_until:
            await self._store_fills(values)
        return values

    def _remember(self, key: str, value: Value, generation: int, stamp: float) -> None:
        """Keep an in-process copy, unless an invalidation arrived while it was being read, or
        the subscription that would announce its invalidation was not yet confirmed when the read
        began. A tombstone is kept always, and nothing but another incarnation replaces one."""
        permanent = _permanent(value)
        if not permanent:
            if generation != self._generation or not (self._subscribed or self._redis is None):
                return
            current = self._local.peek(key)
            if current is not None and _permanent(current) and not _supersedes(value, current):
                return
        clock = self._clock()
        if permanent:
            lifetime: float = TOMBSTONE_TTL_SECONDS
        elif isinstance(value, bool):
            lifetime = ENV_TTL_SECONDS
        elif isinstance(value, TokenRow):
            lifetime = value.filled_at + ENTRY_TTL_SECONDS - stamp
        else:
            lifetime = ENTRY_TTL_SECONDS
        if lifetime > 0:
            self._local.put(key, value, clock + lifetime)

    async def _store_fills(self, values: Mapping[str, Value]) -> None:
        redis: Any = self._redis

        async def store() -> None:
            pipe = redis.pipeline(transaction=False)
            for key, value in values.items():
                pipe.set(self._key_prefix + key, _encode(value), ex=_ttl_of(value), nx=True)
            await pipe.execute()

        await self._redis_call(store)

    # --- writing ------------------------------------------------------------------------------

    async def _bury(self, tombstones: Mapping[str, Value]) -> None:
        if not tombstones:
            return
        self._generation += 1
        clock = self._clock()
        for key, value in tombstones.items():
            self._local.put(key, value, clock + TOMBSTONE_TTL_SECONDS)
        if self._redis is None:
            return
        entries = {key: (value, TOMBSTONE_TTL_SECONDS) for key, value in tombstones.items()}
        if not await self._write(entries, list(tombstones)):
            for key, value in tombstones.items():
                if len(self._pending) < PENDING_MAX:
                    self._pending[key] = value
            logger.error(
                "could not write %d tombstone(s) to the validity cache; this process no longer"
                " accepts them, others may until their entries expire (%s s) or a retry lands",
                len(tombstones),
                ENTRY_TTL_SECONDS,
            )

    async def _forget(self, keys: Sequence[str]) -> None:
        self._generation += 1
        for key in keys:
            self._local.drop(key, keep_token_tombstone=False)
            self._pending.pop(key, None)
        if self._redis is None:
            return
        redis = self._redis

        async def delete() -> bool:
            pipe = redis.pipeline(transaction=True)
            pipe.delete(*[self._key_prefix + key for key in keys])
            pipe.publish(self._channel, json.dumps(list(keys)))
            await pipe.execute()
            return True

        if await self._redis_call(delete, always=True) is None:
            logger.warning("could not drop %s from the validity cache", ", ".join(keys))

    async def _write(self, entries: Mapping[str, tuple[Value, int]], announce: list[str]) -> bool:
        """Plain SETs (they override any fill) and their announcement, as one transaction."""
        redis: Any = self._redis

        async def write() -> bool:
            pipe = redis.pipeline(transaction=True)
            for key, (value, ttl) in entries.items():
                pipe.set(self._key_prefix + key, _encode(value), ex=ttl)
            pipe.publish(self._channel, json.dumps(announce))
            await pipe.execute()
            return True

        return await self._redis_call(write, always=True) is True

    async def _retry_pending(self) -> None:
        if not self._pending:
            return
        pending = dict(self._pending)
        entries = {key: (value, TOMBSTONE_TTL_SECONDS) for key, value in pending.items()}
        if await self._write(entries, list(pending)):
            for key in pending:
                if self._pending.get(key) == pending[key]:
                    del self._pending[key]
            logger.info("wrote %d delayed tombstone(s) to the validity cache", len(pending))

    # --- Redis plumbing -----------------------------------------------------------------------

    async def _redis_call(
        self, operation: Callable[[], Awaitable[T]], *, always: bool = False
    ) -> T | None:
        """The operation's result, or None if Redis failed (which opens the breaker).

        Reads skip Redis while the breaker is open; writes (`always`) try anyway, since a
        deletion that reaches Redis late is still worth more than one that never does.
        """
        if not always and self._clock() < self._redis_down_until:
            return None
        try:
            async with asyncio.timeout(REDIS_CALL_SECONDS):
                return await operation()
        except (OSError, TimeoutError, RedisError) as error:
            if self._clock() >= self._redis_down_until:
                logger.warning(
                    "Redis unavailable (%r): validation reads PostgreSQL for the next %s s",
                    error,
                    BREAKER_SECONDS,
                )
            self._redis_down_until = self._clock() + BREAKER_SECONDS
            return None

    def _fresh(self, clock: float) -> bool:
        if self._redis is None:
            return True
        return clock - self._fresh_as_of < FRESH_SECONDS

    def _lose_subscription(self) -> None:
        """Nothing heard from now on can be trusted to be complete: drop every positive copy."""
        self._subscribed = False
        self._fresh_as_of = -math.inf
        self._generation += 1
        self._local.drop_positives()

    def _on_reconnect(self, _connection: Any) -> None:
        """redis-py reconnected the subscription by itself: messages may have been lost."""
        self._subscription_broken = True
        self._lose_subscription()

    def _apply(self, data: bytes) -> None:
        """An invalidation published by some process (this one included)."""
        self._generation += 1
        if data == b"*":
            self._local.clear()
            return
        try:
            keys = json.loads(data)
        except ValueError:
            logger.warning("unreadable validity invalidation: dropping every in-process copy")
            self._local.clear()
            return
        for key in keys:
            self._local.drop(str(key), keep_token_tombstone=True)

    async def _listen_forever(self) -> None:
        failures = 0
        while not self._closing:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                log = logger.warning if failures == 1 else logger.debug
                log("validity subscription lost (%r); in-process copies bypassed until back", error)
            else:
                failures = 0
            finally:
                self._lose_subscription()
            if not self._closing:
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        redis = self._redis
        assert redis is not None
        pubsub = redis.pubsub()
        connection: Any = None
        try:
            async with asyncio.timeout(REDIS_CALL_SECONDS):
                await pubsub.subscribe(self._channel)
            connection = pubsub.connection
            self._subscription_broken = False
            connection.register_connect_callback(self._on_reconnect)
            await self._retry_pending()
            pings: dict[int, float] = {}
            sequence = 0
            next_ping = next_retry = self._clock()
            while not self._closing:
                clock = self._clock()
                if self._subscription_broken:
                    raise ConnectionError("the subscription was re-established underneath")
                if pings and clock - min(pings.values()) > DEAD_AFTER_SECONDS:
                    raise ConnectionError("heartbeat unanswered")
                if clock >= next_ping:
                    sequence += 1
                    async with asyncio.timeout(REDIS_CALL_SECONDS):
                        await pubsub.ping(str(sequence))
                    pings[sequence] = clock
                    next_ping = clock + HEARTBEAT_SECONDS
                if self._pending and clock >= next_retry:
                    next_retry = clock + RETRY_SECONDS
                    await self._retry_pending()
                async with asyncio.timeout(REDIS_CALL_SECONDS + HEARTBEAT_SECONDS):
                    message = await pubsub.get_message(timeout=max(0.0, next_ping - self._clock()))
                if message is None:
                    continue
                if message["type"] == "message":
                    self._apply(message["data"])
                elif message["type"] == "subscribe":
                    # From here on every invalidation reaches this process; copies kept before
                    # (or read before now) might have missed one.
                    self._lose_subscription()
                    self._subscribed = True
                elif message["type"] == "pong":
                    answered = int(message["data"] or 0)
                    sent = pings.get(answered)
                    if sent is not None:
                        self._fresh_as_of = max(self._fresh_as_of, sent)
                        pings = {s: t for s, t in pings.items() if s > answered}
        finally:
            if connection is not None:
                connection.deregister_connect_callback(self._on_reconnect)
            try:
                await pubsub.aclose()
            except Exception:  # closing a broken connection may fail too; nothing to do
                logger.debug("closing the validity subscription failed", exc_info=True)

    @staticmethod
    def _clock() -> float:
        # The event loop's clock: monotonic, and left running by freezegun's real_asyncio.
        return asyncio.get_running_loop().time()


# --- small helpers ----------------------------------------------------------------------------


def _supersedes(value: Value, tombstone: Value) -> bool:
    """A live incarnation of a tenant or user created again under the same id."""
    return (
        isinstance(value, Principal)
        and isinstance(tombstone, Principal)
        and value.incarnation != tombstone.incarnation
    )


def _ttl_of(value: Value) -> int:
    if _permanent(value):
        return TOMBSTONE_TTL_SECONDS
    if isinstance(value, bool):
        return ENV_TTL_SECONDS
    return ENTRY_TTL_SECONDS


def _subject_of(claims: Mapping[str, Any]) -> _Subject:
    kind = claims["type"]
    sub, tenant_id, user_id = claims.get("sub"), claims.get("tenantId"), claims.get("userId")
    if not isinstance(sub, str) or not isinstance(tenant_id, str):
        raise Unauthenticated(INVALID_MESSAGE)
    if kind in USER_TOKEN_TYPES:
        if not isinstance(user_id, str):
            raise Unauthenticated(INVALID_MESSAGE)
    else:
        user_id = None
    table: Table = "at" if kind in ACCESS_TOKEN_TYPES else "cc"
    return _Subject(table, sub, tenant_id, user_id)


def _keys_claim(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _from_timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


def _unauthenticated(verdict: _Invalid) -> Exception:
    messages = {"disabled": DISABLED_MESSAGE, "gone": INVALID_MESSAGE, "expired": EXPIRED_MESSAGE}
    return Unauthenticated(messages[verdict.reason])


def _not_found(token_id: str) -> Callable[[_Invalid], Exception]:
    def error(verdict: _Invalid) -> Exception:
        if verdict.reason == "disabled":
            return Disabled()
        return NotFound(f"Access token {token_id} not found")

    return error
