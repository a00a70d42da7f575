"""Rate limits on client-secret checks, counted in Redis (or in-process memory in `m2m dev`), and
the client address they count by."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import RateLimited

logger = logging.getLogger("m2m.ratelimit")

WINDOW_SECONDS = 60
DEFAULT_PER_CLIENT = 60
DEFAULT_PER_ADDRESS = 600
# After Redis fails, count in memory this long before trying Redis again, so an outage
# costs one socket timeout every few seconds rather than one per request.
REDIS_RETRY_SECONDS = 5.0
KEY_SPACE = "ratelimit:"
TOO_MANY = "Too many requests"
UNKNOWN_ADDRESS = "unknown"
# One host of IPv6 usually holds a whole /64: counting by single addresses would give it 2**64
# budgets.
IPV6_COUNTED_PREFIX = 64

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- the client address --------------------------------------------------------------------------


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: tuple[str, ...]
) -> str:
    """The address the limits count a request by.

    The socket's peer, unless it is inside one of `trusted_proxies` (CIDRs): then X-Forwarded-For
    (`forwarded_for`, every such header in order) is walked from the right, past the hops that
    are trusted proxies themselves, to the first that is not: each proxy appends the address it
    saw, so only the hops right of that one were written by a proxy we trust, and anything left
    of it is whatever the client chose to send. When every hop is a trusted proxy the left-most
    counts; a hop that is not an IP address ends the walk at the trusted hop beside it. An IPv6
    address counts by its /64.
    """
    address = _parse_ip(peer) if peer is not None else None
    if address is None:
        return peer or UNKNOWN_ADDRESS  # not an IP socket (a Unix socket, say)
    proxies = _networks(trusted_proxies)
    if _is_trusted(address, proxies):
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        for hop in reversed([hop for hop in hops if hop]):
            parsed = _parse_ip(hop)
            if parsed is None:
                break
            address = parsed
            if not _is_trusted(parsed, proxies):
                break
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_COUNTED_PREFIX), strict=False)
        return str(network)
    return str(address)


def _parse_ip(text: str) -> IPAddress | None:
    """An address as a socket or a proxy writes it: bare, `[v6]:port`, or `v4:port`."""
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """Parsed once per setting, not once per request."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _is_trusted(address: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in proxies)


class _MemoryCounts:
    """Fixed-window counters of one process: the dev backend, and the fallback for outages."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}

    def increment(self, keys: list[str], window: int) -> list[int]:
        if window != self._window:
            # Only the current window's counts matter; older ones are dropped whole.
            self._window = window
            self._counts = {}
        counts = []
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + 1
            counts.append(self._counts[key])
        return counts

    def clear(self) -> None:
        self._counts = {}


class RateLimiter:
    """Attempts per clientId and per client address in fixed one-minute windows.

    `redis` None means the in-process memory backend (one process only: `m2m dev`). Every
    attempt counts, failed or not. When Redis cannot answer, the limiter fails open: the
    request goes on, counted in this process's memory only. Availability wins over exact
    throttling here, because refusing every exchange while Redis is down would take the
    whole service down with it.
    """

    def __init__(
        self,
        *,
        redis: Redis | None,
        prefix: str,
        per_client: int = DEFAULT_PER_CLIENT,
        per_address: int = DEFAULT_PER_ADDRESS,
        window_seconds: int = WINDOW_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}{KEY_SPACE}"
        self.per_client = per_client
        self.per_address = per_address
        self._window_seconds = window_seconds
        self._memory = _MemoryCounts()
        self._redis_retry_at = 0.0

    async def count_attempt(self, *, client_id: str, address: str, now: datetime) -> None:
        """Count one attempt to authenticate `client_id` from `address`; RateLimited when
        either count is over its limit for the current window."""
        window = math.floor(now.timestamp()) // self._window_seconds
        keys = [
            f"{self._prefix}client:{window}:{client_id}",
            f"{self._prefix}address:{window}:{address}",
        ]
        client_count, address_count = await self._increment(keys, window)
        if client_count > self.per_client or address_count > self.per_address:
            window_end = (window + 1) * self._window_seconds
            retry_after = max(1, math.ceil(window_end - now.timestamp()))
            raise RateLimited(TOO_MANY, retry_after)

    async def reset(self) -> None:
        """Forget every count (tests; an operator unblocking a client)."""
        self._memory.clear()
        if self._redis is None:
            return
        pattern = _glob_escape(self._prefix) + "*"
        keys = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
        if keys:
            await self._redis.delete(*keys)

    async def _increment(self, keys: list[str], window: int) -> list[int]:
        if self._redis is None or time.monotonic() < self._redis_retry_at:
            return self._memory.increment(keys, window)
        try:
            # One round trip: INCR and EXPIRE of both keys in one pipeline.
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.expire(key, self._window_seconds + 1)
                results = await pipe.execute()
        except (RedisError, OSError) as error:
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning(
                "rate limiter cannot reach Redis (%r); counting in this process only for %ss",
                error,
                REDIS_RETRY_SECONDS,
            )
            return self._memory.increment(keys, window)
        return [int(results[index * 2]) for index in range(len(keys))]


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
