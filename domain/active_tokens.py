"""The answers of `/active` (the ids of the access tokens valid now, which the Frontegg SDKs
poll every 10 seconds from every process), kept per API process.

An answer is built by PostgreSQL in one statement and kept until something could change it:
- an invalidation reaches this process (a token, user or tenant deleted, an expiry evicted,
  the whole cache forgotten) or new access tokens are announced: the validity cache's version
  changes, on the process that made the change at once and on every other within its
  propagation bound;
- the first of its tokens expires;
- MAX_AGE_SECONDS pass (a change made around the API, in SQL, shows by then);
- and it is never used while this process may have missed an invalidation (its subscription
  is not current).
A request that finds no usable answer waits for a build of the same answer that began less
than SHARED_BUILD_SECONDS ago with no change applied here since, or begins one: so many
requests at once cost one statement, subscription or not, and each answer still reflects what
was committed before the request came, but for its last SHARED_BUILD_SECONDS (and all that
this process changed itself). The gzip form is made once per kept answer, the first time a
client asks for it; an answer built for one request (not kept) is sent as it is.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.tokens import active_access_token_ids
from domain.validity import ENTRY_TTL_SECONDS, ValidityCache

MAX_AGE_SECONDS: Final = float(ENTRY_TTL_SECONDS)
# A request arriving while a build that began less than this ago is under way waits for it
# rather than start its own: that build's read began within the propagation bound of the
# request (the same 100 ms as the validity cache), whatever the subscription says.
SHARED_BUILD_SECONDS: Final = 0.1
# Answers kept (one per kind and tenant asked for): the SDKs ask for all tenants at once.
MAX_ANSWERS: Final = 64
# The fastest level: the request that first asks for the gzip form waits for it.
GZIP_LEVEL: Final = 1

Key = tuple[bool, str | None]


@dataclass
class ActiveAnswer:
    """One answer: the JSON array, and its gzip form once asked for."""

    body: bytes
    version: int | None  # the validity cache's version when the build began
    built_at: float  # monotonic clock
    valid_until: datetime | None  # the first expiry among its tokens
    _gzipped: bytes | None = field(default=None, repr=False)
    _gzipping: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def kept(self) -> bool:
        """Whether the answer is kept for later requests (worth compressing once)."""
        return self.version is not None

    async def gzipped(self) -> bytes:
        """The body compressed (in a thread: 100,000 ids are 4 MB), made once."""
        if self._gzipped is None:
            async with self._gzipping:
                if self._gzipped is None:
                    self._gzipped = await asyncio.to_thread(
                        gzip.compress, self.body, GZIP_LEVEL, mtime=0
                    )
        return self._gzipped


@dataclass
class _Build:
    started_at: float  # monotonic clock
    generation: int  # the validity cache's when it began
    task: asyncio.Future[ActiveAnswer]


class ActiveTokenLists:
    def __init__(self, validity: ValidityCache, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._validity = validity
        self._sessions = sessions
        self._answers: OrderedDict[Key, ActiveAnswer] = OrderedDict()
        self._builds: dict[Key, _Build] = {}

    async def answer(
        self, *, user_tokens: bool, tenant_id: str | None, now: datetime
    ) -> ActiveAnswer:
        key: Key = (user_tokens, tenant_id)
        kept = self._usable(key, now)
        if kept is not None:
            return kept
        clock = time.monotonic()
        generation = self._validity.generation
        build = self._builds.get(key)
        if (
            build is None
            or clock - build.started_at >= SHARED_BUILD_SECONDS
            # A change applied here since it began (this process's own deletion included).
            or build.generation != generation
        ):
            build = _Build(clock, generation, asyncio.ensure_future(self._build(key, now)))
            self._builds[key] = build
            if len(self._builds) > MAX_ANSWERS:
                self._forget_old_builds(clock)
        # Shielded: a client that hangs up does not cancel the build the others wait for.
        built = await asyncio.shield(build.task)
        if built.kept and self._answers.get(key) is not built:
            self._answers[key] = built
            self._answers.move_to_end(key)
            while len(self._answers) > MAX_ANSWERS:
                self._answers.popitem(last=False)
        return built

    def _forget_old_builds(self, clock: float) -> None:
        """Drop the finished builds no request may join any more (they hold their answers)."""
        for key, build in list(self._builds.items()):
            if build.task.done() and clock - build.started_at >= SHARED_BUILD_SECONDS:
                del self._builds[key]

    def _usable(self, key: Key, now: datetime) -> ActiveAnswer | None:
        kept = self._answers.get(key)
        if kept is None:
            return None
        version = self._validity.version
        if (
            version is None
            or kept.version != version
            or (kept.valid_until is not None and now >= kept.valid_until)
            or time.monotonic() - kept.built_at >= MAX_AGE_SECONDS
        ):
            return None
        return kept

    async def _build(self, key: Key, now: datetime) -> ActiveAnswer:
        user_tokens, tenant_id = key
        version = self._validity.version
        built_at = time.monotonic()
        session: Any
        async with self._sessions() as session:
            ids, valid_until = await active_access_token_ids(
                session, user_tokens=user_tokens, tenant_id=tenant_id, now=now
            )
        return ActiveAnswer(ids.encode(), version, built_at, valid_until)
