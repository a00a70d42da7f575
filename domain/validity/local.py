"""The bounded in-process copies: cache entries, and verified JWTs with their last answer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from domain.validity.entries import DELETED, Value, _permanent
from domain.validity.verdict import Validated

LOCAL_MAX_ENTRIES: Final = 200_000
VERIFIED_MAX_TOKENS: Final = 100_000


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
