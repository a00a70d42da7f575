"""What the validity cache holds: its entries, their keys and lifetimes, their Redis encoding."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

logger = logging.getLogger("m2m.validity")

# A filled entry lives this long. It is also how stale the roles and permissions reported for an
# access token may be after a role change; validity itself never waits for it.
ENTRY_TTL_SECONDS: Final = 60
# The M2M switch is re-read from PostgreSQL this often: it bounds how long two concurrent
# switches, or a switch whose cache write failed, can leave other processes on the old value.
ENV_TTL_SECONDS: Final = 5
# Tombstones outlive any fill that could have raced the deletion; ids of tokens are never reused.
TOMBSTONE_TTL_SECONDS: Final = 86_400

ENV_KEY: Final = "env"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

Table = Literal["at", "cc"]


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
