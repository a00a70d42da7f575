"""The verdict on a token from the entries read for it: pure functions, no Redis, no database."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from domain.errors import Disabled, NotFound, Unauthenticated
from domain.validity.entries import (
    DELETED,
    ENTRY_TTL_SECONDS,
    ENV_KEY,
    Principal,
    Table,
    TokenRow,
    Value,
    _microseconds,
    _tenant_key,
    _token_key,
    _user_key,
)

ACCESS_TOKEN_TYPES: Final = frozenset({"userAccessToken", "tenantAccessToken"})
CREDENTIAL_TYPES: Final = frozenset({"userApiToken", "tenantApiToken"})
ALL_TOKEN_TYPES: Final = ACCESS_TOKEN_TYPES | CREDENTIAL_TYPES
USER_TOKEN_TYPES: Final = frozenset({"userAccessToken", "userApiToken"})

DISABLED_MESSAGE: Final = "Api tokens are disabled"
INVALID_MESSAGE: Final = "Token is not valid"
EXPIRED_MESSAGE: Final = "Token expired"


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


def _validated(subject: _Subject, claims: Mapping[str, Any], row: TokenRow) -> Validated:
    """The answer for a token the judge found valid.

    An access token speaks with the roles and permissions its row carries now; a credential's
    JWT carries its own, and expires at the earlier of the JWT and the credential.
    """
    kind = claims["type"]
    if kind in ACCESS_TOKEN_TYPES:
        roles, permissions = row.roles, row.permissions
        expires_at = row.expires_at
    else:
        roles = _keys_claim(claims, "roles")
        permissions = _keys_claim(claims, "permissions")
        expires_at = _earliest(_from_timestamp(claims.get("exp")), row.expires_at)
    return Validated(
        type=kind,
        sub=subject.token_id,
        tenant_id=subject.tenant_id,
        user_id=subject.user_id,
        roles=roles,
        permissions=permissions,
        expires_at=expires_at,
        claims=claims,
    )


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
