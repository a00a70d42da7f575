"""The validity cache: ValidityCache, its pub/sub listener and heartbeat, and validate().

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

With `redis=None` the in-process layer is the whole cache (one process: `m2m dev`). The listener
and the heartbeat live here with the cache because they keep one invariant together: an
in-process copy that says "valid" is trusted only while every invalidation published before it
has been applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from redis.exceptions import RedisError, ResponseError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.db import database_unreachable, statement_connection
from domain.errors import Disabled, NotFound, Unavailable
from domain.keys import KeyRing
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
    _decode,
    _encode,
    _permanent,
    _supersedes,
    _tenant_key,
    _token_key,
    _ttl_of,
    _user_key,
    incarnation,
)
from domain.validity.fills import (
    _fill_statement,
    _filled_values,
    _refill_statement,
    _refilled_values,
)
from domain.validity.local import (
    LOCAL_MAX_ENTRIES,
    VERIFIED_MAX_TOKENS,
    _KnownTokens,
    _LocalEntries,
)
from domain.validity.reconcile import reconcile as reconcile_entries
from domain.validity.verdict import (
    AccessTokenGrants,
    Validated,
    _Invalid,
    _judge,
    _NeedDatabase,
    _not_found,
    _Subject,
    _subject_of,
    _unauthenticated,
    _validated,
)

logger = logging.getLogger("m2m.validity")

T = TypeVar("T")

# Pub/sub heartbeat: in-process copies are trusted only while a ping sent less than
# FRESH_SECONDS ago has been answered (inside the 100 ms promise). Pub/sub keeps order, so every
# invalidation published before that ping has been applied. Not much tighter: under load the
# event loop answers the pong late, and each lapse sends validations to Redis, which slows
# the loop further (at 64 connections, 50 ms made the p99 swing between 30 and 440 ms).
HEARTBEAT_SECONDS: Final = 0.02
FRESH_SECONDS: Final = 0.08
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

PENDING_MAX: Final = 10_000

# Refresh ahead: a token validated again in the second half of its entry's life has its entry
# read again in the background, with others due, in one statement per batch; so a token in
# steady use never waits for a fill, however many tokens there are (each entry would otherwise
# be filled again once a minute, on the request that finds it expired).
REFRESH_AHEAD_AFTER_SECONDS: Final = ENTRY_TTL_SECONDS / 2
REFRESH_BATCH: Final = 500
REFRESH_GATHER_SECONDS: Final = 0.05
REFRESH_MAX_QUEUED: Final = 50_000


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
        # Tokens whose entries are read again in the background, with the time of the
        # validation that asked (a fill's "now").
        self._refresh_queue: dict[tuple[Table, str], datetime] = {}
        self._refresher: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin listening for invalidations pushed by other processes."""
        if self._redis is None or self._listener is not None:
            return
        self._listener = asyncio.create_task(self._listen_forever(), name="validity-listener")

    async def close(self) -> None:
        """Stop listening (and refreshing ahead)."""
        refresher, self._refresher = self._refresher, None
        self._refresh_queue.clear()
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
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
    def refreshing(self) -> bool:
        """Whether entries are due to be, or being, read again in the background."""
        return bool(self._refresh_queue)

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
    def generation(self) -> int:
        """Bumped by every invalidation (or announcement of new access tokens) applied here,
        whether or not the subscription is current."""
        return self._generation

    @property
    def version(self) -> int | None:
        """A number that changes whenever an invalidation (or an announcement of new access
        tokens) is applied here; None while one may have been missed (not listening). What is
        derived from the database may be kept while it stays the same (`/active`'s answers)."""
        return self._generation if self._fresh(self._clock()) else None

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
        answer = _validated(subject, claims, row)
        expires_at = answer.expires_at
        if generation == self._generation and (self._subscribed or self._redis is None):
            known.answer = answer
            known.generation = generation
            known.answer_deadline = self._clock() + ENV_TTL_SECONDS
            # Until the row is due for a refresh: the next validation after that goes through
            # _settle, which asks for one (and answers from memory meanwhile).
            known.answer_not_after = min(
                known.not_after,
                math.inf if expires_at is None else expires_at.timestamp(),
                row.filled_at + REFRESH_AHEAD_AFTER_SECONDS,
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
        """Disabled unless the M2M switch is on."""
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

    async def announce_new_access_tokens(self) -> None:
        """Access tokens were created: what lists the valid ones changes here at once, and
        everywhere within the propagation bound. No entry changes."""
        self._generation += 1
        if self._redis is None:
            return
        redis = self._redis
        await self._redis_call(lambda: redis.publish(self._channel, "[]"), always=True)

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
        on the next read).

        Unavailable (raised) when Redis cannot be read: the job fails and is retried.
        """
        return await reconcile_entries(self, self._sessions, batch)

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

    async def set_m2m_switch(self, enabled: bool) -> None:
        """The committed M2M switch: in effect here at once, everywhere soon."""
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
                "could not write the M2M switch (on=%s) to the validity cache; other API processes"
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
                row = _judge(subject, values, now, final=False)
            except _NeedDatabase:
                values = await self._fill(subject.table, subject.token_id, now)
                return _judge(subject, values, now, final=True)
        except _Invalid as verdict:
            raise invalid(verdict) from None
        if row.filled_at + REFRESH_AHEAD_AFTER_SECONDS <= now.timestamp():
            self._refresh_ahead(subject.table, subject.token_id, now)
        return row

    def _refresh_ahead(self, table: Table, token_id: str, now: datetime) -> None:
        """Read the token's entries again in the background (see REFRESH_AHEAD_AFTER_SECONDS).
        Only while a refreshed copy would be kept (see _remember)."""
        if not (self._subscribed or self._redis is None) or self._closing:
            return
        key = (table, token_id)
        if key in self._refresh_queue or len(self._refresh_queue) >= REFRESH_MAX_QUEUED:
            return
        self._refresh_queue[key] = now
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_queued(), name="validity-refresh-ahead"
            )

    async def _refresh_queued(self) -> None:
        while self._refresh_queue:
            await asyncio.sleep(REFRESH_GATHER_SECONDS)  # let a batch gather
            batch = list(itertools.islice(self._refresh_queue, REFRESH_BATCH))
            # Filled "as of" the earliest request among them: the read comes after all of them.
            now = min(self._refresh_queue[key] for key in batch)
            try:
                for table in ("at", "cc"):
                    token_ids = [token_id for kind, token_id in batch if kind == table]
                    if token_ids:
                        await self._refill(table, token_ids, now)
            except Exception as error:
                # Nothing is lost: the entries expire, and the next validation fills them.
                logger.debug("refreshing validity entries ahead failed: %r", error)
            finally:
                for key in batch:
                    self._refresh_queue.pop(key, None)

    async def _refill(self, table: Table, token_ids: list[str], now: datetime) -> None:
        """The entries of `token_ids`, read again from PostgreSQL in one statement, kept in this
        process (as a fill's are, unless an invalidation arrived meanwhile). Redis keeps the
        copies it has until they expire: each process refreshes what it uses."""
        generation = self._generation
        async with self._sessions() as session:
            connection = await statement_connection(session)
            rows = list(
                await connection.execute(_refill_statement(table), {"token_ids": token_ids})
            )
        stamp = now.timestamp()
        for values in _refilled_values(table, rows, now).values():
            for key, value in values.items():
                self._remember(key, value, generation, stamp)

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
        statement = _fill_statement(table)
        try:
            async with self._sessions() as session:
                # No transaction: one statement reads a consistent snapshot on its own.
                connection = await statement_connection(session)
                rows = list(await connection.execute(statement, {"token_id": token_id}))
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
            try:
                await pipe.execute()
            except ResponseError:
                await self._delete_and_announce(keys)
            return True

        if await self._redis_call(delete, always=True) is None:
            logger.warning("could not drop %s from the validity cache", ", ".join(keys))

    async def _write(self, entries: Mapping[str, tuple[Value, int]], announce: list[str]) -> bool:
        """Plain SETs (they override any fill) and their announcement, as one transaction.

        When Redis answers but refuses them (full under `noeviction`), the entries are deleted
        and announced instead, so that no process answers from what they said before; the
        write itself has failed all the same (False), for the caller to retry.
        """
        redis: Any = self._redis

        async def write() -> bool:
            pipe = redis.pipeline(transaction=True)
            for key, (value, ttl) in entries.items():
                pipe.set(self._key_prefix + key, _encode(value), ex=ttl)
            pipe.publish(self._channel, json.dumps(announce))
            try:
                await pipe.execute()
            except ResponseError:
                await self._delete_and_announce(list(entries))
                raise
            return True

        return await self._redis_call(write, always=True) is True

    async def _delete_and_announce(self, keys: Sequence[str]) -> None:
        """What a Redis that refuses writes still accepts: deleting entries (a later read fills
        them from PostgreSQL) and publishing. Not as a transaction: Redis refuses every command
        queued in MULTI while it is out of memory."""
        redis: Any = self._redis
        pipe = redis.pipeline(transaction=False)
        pipe.delete(*[self._key_prefix + key for key in keys])
        pipe.publish(self._channel, json.dumps(list(keys)))
        await pipe.execute()

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
