"""The validity cache (Redis, or in-process memory): is this token valid now?

One concern per module, each importing only those listed before it:
- entries: what the cache holds (token rows, tenant and user incarnations, tombstones, the M2M
  switch), their keys, lifetimes and Redis encoding;
- verdict: the judge and the answers it gives (Validated, AccessTokenGrants), pure functions;
- fills: the SQL that fills the entries a validation needs from PostgreSQL;
- local: the bounded in-process copies of entries and of verified JWTs;
- reconcile: the repair rules as a table, and the job that applies them to every entry;
- cache: ValidityCache, with its pub/sub listener and heartbeat.
"""

from domain.validity.cache import (
    BREAKER_SECONDS,
    CLOSE_ATTEMPTS,
    DEAD_AFTER_SECONDS,
    FRESH_SECONDS,
    HEARTBEAT_SECONDS,
    PENDING_MAX,
    RECONNECT_SECONDS,
    REDIS_CALL_SECONDS,
    RETRY_SECONDS,
    ValidityCache,
)
from domain.validity.entries import (
    DELETED,
    ENTRY_TTL_SECONDS,
    ENV_KEY,
    ENV_TTL_SECONDS,
    TOMBSTONE_TTL_SECONDS,
    Principal,
    Table,
    TokenRow,
    Value,
    incarnation,
)
from domain.validity.local import (
    LOCAL_MAX_ENTRIES,
    VERIFIED_MAX_TOKENS,
)
from domain.validity.verdict import (
    ACCESS_TOKEN_TYPES,
    ALL_TOKEN_TYPES,
    CREDENTIAL_TYPES,
    DISABLED_MESSAGE,
    EXPIRED_MESSAGE,
    INVALID_MESSAGE,
    USER_TOKEN_TYPES,
    AccessTokenGrants,
    Validated,
)

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "ALL_TOKEN_TYPES",
    "BREAKER_SECONDS",
    "CLOSE_ATTEMPTS",
    "CREDENTIAL_TYPES",
    "DEAD_AFTER_SECONDS",
    "DELETED",
    "DISABLED_MESSAGE",
    "ENTRY_TTL_SECONDS",
    "ENV_KEY",
    "ENV_TTL_SECONDS",
    "EXPIRED_MESSAGE",
    "FRESH_SECONDS",
    "HEARTBEAT_SECONDS",
    "INVALID_MESSAGE",
    "LOCAL_MAX_ENTRIES",
    "PENDING_MAX",
    "RECONNECT_SECONDS",
    "REDIS_CALL_SECONDS",
    "RETRY_SECONDS",
    "TOMBSTONE_TTL_SECONDS",
    "USER_TOKEN_TYPES",
    "VERIFIED_MAX_TOKENS",
    "AccessTokenGrants",
    "Principal",
    "Table",
    "TokenRow",
    "Validated",
    "ValidityCache",
    "Value",
    "incarnation",
]
