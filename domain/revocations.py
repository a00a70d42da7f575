"""The revocation feed: what stopped being valid, in commit order, for APIs that verify locally.

Entries go to a Redis stream (one per deployment, under the Redis prefix) after the commit that
made them true, from the same after-commit step that writes the validity cache's tombstones, so
every path that kills a token feeds it. Redis numbers the entries (`<ms>-<seq>`, increasing
across every process), which makes them resumable: a consumer sends the last id it saw as
`Last-Event-ID` and gets every later entry. Entries older than the retention are trimmed; a
consumer whose last id is older than the oldest kept entry (or unknown to this stream, after a
Redis flush) gets a `resync` instead, and must rebuild its state from the API.

In `m2m dev` (no Redis) the feed lives in the process's memory with the same ids and rules.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from domain.errors import InvalidInput, Unavailable

# How long one wait for new entries lasts before the stream sends a keep-alive.
FOLLOW_BLOCK_MS: Final = 15_000
MAX_READ: Final = 1000
_ID: Final = re.compile(r"^(\d{1,20})-(\d{1,20})$")

StreamId = tuple[int, int]

# Trim the stream (KEYS[1]) below ARGV[1] and remember the highest id trimmed (KEYS[2]), at
# once: a consumer whose last id is below that one missed entries.
_TRIM: Final = """
local below = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #below > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
  redis.call('SET', KEYS[2], below[1][1])
end
return #below
"""


@dataclass(frozen=True)
class FeedEntry:
    """One revocation: its stream id and what it says (`type` plus the ids)."""

    id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Resync:
    """The consumer's last id is older than what the feed keeps (or unknown to it)."""

    reason: str


def parse_last_event_id(value: str | None) -> StreamId | None:
    if value is None or value == "":
        return None
    match = _ID.match(value.strip())
    if match is None:
        raise InvalidInput("Last-Event-ID must be an id this feed sent (e.g. 1764466800000-0)")
    return int(match.group(1)), int(match.group(2))


def _parse(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    milliseconds, sequence = text.split("-")
    return int(milliseconds), int(sequence)


def _format(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


class RevocationFeed:
    """Publish revocations after their commit; read them from an id on, and follow them live."""

    def __init__(
        self,
        redis: Redis | None,
        prefix: str,
        retention_seconds: int,
        *,
        reader: Redis | None = None,
    ) -> None:
        """`reader`: the client for the blocking reads of `after` (its socket timeout must
        outlast FOLLOW_BLOCK_MS, unlike the API's fail-fast client); `redis` by default."""
        self._redis = redis
        self._reader = reader or redis
        self._key = f"{prefix}revocations"
        # The highest id trimmed so far (Redis 7.0's XTRIM does not record it in the stream).
        self._trimmed_key = f"{prefix}revocations:trimmed"
        self._retention_ms = retention_seconds * 1000
        # `m2m dev`: the stream in memory.
        self._memory: deque[tuple[StreamId, dict[str, Any]]] = deque()
        self._trimmed_up_to: StreamId = (0, 0)
        self._last: StreamId = (0, 0)
        self._arrived = asyncio.Condition()

    async def close(self) -> None:
        """Close the reading client if it is the feed's own."""
        if self._reader is not None and self._reader is not self._redis:
            await self._reader.aclose()

    async def publish(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if not entries:
            return
        now_ms = int(time.time() * 1000)
        if self._redis is None:
            async with self._arrived:
                for entry in entries:
                    milliseconds = max(now_ms, self._last[0])
                    sequence = self._last[1] + 1 if milliseconds == self._last[0] else 0
                    self._last = (milliseconds, sequence)
                    self._memory.append((self._last, dict(entry)))
                while self._memory and self._memory[0][0][0] < now_ms - self._retention_ms:
                    self._trimmed_up_to = self._memory.popleft()[0]
                self._arrived.notify_all()
            return
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(self._key, {"data": json.dumps(entry, separators=(",", ":"))})
        added: Any = await pipe.execute()
        # Trimmed by age, measured on Redis's clock (the ids' own), not this host's.
        newest_ms = _parse(added[-1])[0]
        await self._redis.eval(
            _TRIM, 2, self._key, self._trimmed_key, f"{newest_ms - self._retention_ms}-0"
        )

    async def gap(self, last: StreamId) -> Resync | None:
        """A Resync when entries after `last` may have been trimmed, or `last` is not from this
        stream (newer than anything it ever held: Redis lost it)."""
        if self._redis is None:
            trimmed, newest = self._trimmed_up_to, self._last
        else:
            try:
                info = await self._redis.xinfo_stream(self._key)
            except ResponseError as error:
                if "no such key" in str(error).lower():
                    return Resync("the feed holds no entries: it was reset") if last else None
                raise
            newest = _parse(info["last-generated-id"])
            highest_trimmed = await self._redis.get(self._trimmed_key)
            trimmed = _parse(highest_trimmed) if highest_trimmed else (0, 0)
        if last < trimmed:
            return Resync("entries after Last-Event-ID are older than the feed's retention")
        if last > newest:
            return Resync("Last-Event-ID is not from this feed: it was reset")
        return None

    async def newest_id(self) -> StreamId:
        if self._redis is None:
            return self._last
        entries: Any = await self._redis.xrevrange(self._key, count=1)
        return _parse(entries[0][0]) if entries else (0, 0)

    async def after(self, last: StreamId, block_ms: int) -> list[FeedEntry]:
        """Entries after `last`, waiting up to block_ms for one when there are none yet."""
        if self._redis is None:
            async with self._arrived:
                if self._last <= last:
                    try:
                        await asyncio.wait_for(self._arrived.wait(), block_ms / 1000)
                    except TimeoutError:
                        return []
                return [
                    FeedEntry(_format(stream_id), data)
                    for stream_id, data in self._memory
                    if stream_id > last
                ][:MAX_READ]
        assert self._reader is not None
        answer: Any = await self._reader.xread(
            {self._key: _format(last)}, count=MAX_READ, block=block_ms
        )
        if not answer:
            return []
        return [
            FeedEntry(
                raw_id.decode() if isinstance(raw_id, bytes) else raw_id,
                json.loads(fields[b"data"] if b"data" in fields else fields["data"]),
            )
            for raw_id, fields in answer[0][1]
        ]

    async def start(self, last: StreamId | None) -> tuple[Resync | None, StreamId]:
        """Where a consumer resumes: right after `last`, or (with a Resync, when it missed too
        much, or with nothing, when it names no id) at the newest entry."""
        try:
            if last is not None:
                gap = await self.gap(last)
                if gap is None:
                    return None, last
                return gap, await self.newest_id()
            return None, await self.newest_id()
        except RedisError as error:
            raise Unavailable("The revocation feed is unavailable") from error

    async def follow(
        self, last: StreamId, block_ms: int = FOLLOW_BLOCK_MS
    ) -> AsyncIterator[FeedEntry | None]:
        """Every entry after `last` as it is committed; None after each quiet wait (a
        keep-alive)."""
        while True:
            entries = await self.after(last, block_ms)
            if not entries:
                yield None
                continue
            for entry in entries:
                yield entry
            last = _parse(entries[-1].id)
