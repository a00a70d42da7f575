"""Brute-force limits on secret checks (client credentials, the vendor credentials), counted in
Redis (or in-process memory in `m2m dev`), and the client address they count by."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import RateLimited, Unauthenticated

logger = logging.getLogger("m2m.ratelimit")

WINDOW_SECONDS = 60
DEFAULT_PER_CLIENT = 60
DEFAULT_PER_ADDRESS = 600
# The vendor credentials are one secret for the whole environment: every failure counts against
# one overall budget, and against the address it came from.
VENDOR_FAILURES_OVERALL = 60
VENDOR_FAILURES_PER_ADDRESS = 10
# An address that presented a subject's right secret stays known to that subject this long after
# its last success: it is let through while the subject's failure budget is spent by others.
KNOWN_ADDRESS_SECONDS = 24 * 3600
# After Redis fails, count in memory this long before trying Redis again, so an outage
# costs one socket timeout every few seconds rather than one per request.
REDIS_RETRY_SECONDS = 5.0
# Known addresses one process keeps in memory at most (dev, or during a Redis outage).
MAX_KNOWN_IN_MEMORY = 100_000
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


# --- the limits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Failed secret checks allowed per window: about one subject (a clientId; the vendor
    credentials) from anywhere, and from one address whatever the subject."""

    scope: str
    per_subject: int
    per_address: int


@dataclass(frozen=True)
class _Reservation:
    """One admitted check, counted as a failure until it is known not to be one."""

    subject_key: str
    address_key: str
    known_key: str
    window: int
    in_memory: bool


# Atomic, so concurrent checks can never take more than the budget between them. A check is
# refused when its address has spent its budget, or when the subject has and the address is not
# one known to the subject (its value: until when, in epoch seconds). An admitted check is
# counted as a failure at once, and given back when it turns out not to be one.
_RESERVE = """
local address = tonumber(redis.call('GET', KEYS[2]) or '0')
if address >= tonumber(ARGV[2]) then return 0 end
local subject = tonumber(redis.call('GET', KEYS[1]) or '0')
if subject >= tonumber(ARGV[1]) then
  local known = tonumber(redis.call('GET', KEYS[3]) or '0')
  if known <= tonumber(ARGV[4]) then return 0 end
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


class _MemoryCounts:
    """The counts and known addresses of one process: the dev backend, and the fallback for
    outages. Fixed windows; only the current one is kept."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, int] = {}
        self._known: dict[str, float] = {}

    def reserve(self, reservation: _Reservation, budget: Budget, now: float) -> bool:
        if reservation.window != self._window:
            self._window = reservation.window
            self._counts = {}
        counts = self._counts
        if counts.get(reservation.address_key, 0) >= budget.per_address:
            return False
        if counts.get(reservation.subject_key, 0) >= budget.per_subject and (
            self._known.get(reservation.known_key, 0.0) <= now
        ):
            return False
        for key in (reservation.subject_key, reservation.address_key):
            counts[key] = counts.get(key, 0) + 1
        return True

    def address_spent(self, reservation: _Reservation, budget: Budget) -> bool:
        """Whether the address has spent its budget in the window."""
        if reservation.window != self._window:
            return False
        return self._counts.get(reservation.address_key, 0) >= budget.per_address

    def give_back(self, reservation: _Reservation, known_until: float | None, now: float) -> None:
        if reservation.window == self._window:
            for key in (reservation.subject_key, reservation.address_key):
                self._counts[key] = self._counts.get(key, 1) - 1
        if known_until is None:
            return
        if len(self._known) >= MAX_KNOWN_IN_MEMORY:
            self._known = {key: until for key, until in self._known.items() if until > now}
            if len(self._known) >= MAX_KNOWN_IN_MEMORY:
                self._known = {}  # bounded memory first; known machines are let in again later
        self._known[reservation.known_key] = known_until

    def clear(self) -> None:
        self._counts = {}
        self._known = {}


class RateLimiter:
    """Failed secret checks, per subject and per client address, in fixed one-minute windows.

    Only failures count: a right secret gives back what its check took, so an owner's own use
    never spends its budget. An address over its budget is refused whatever it names. A subject
    over its budget (failures from anywhere) is refused without checking the secret, except
    from an address that presented its right secret within KNOWN_ADDRESS_SECONDS: so an attacker
    naming a clientId from elsewhere cannot lock its owner's machines out, and the guesses at one
    subject per window are at most its budget, plus what its known addresses try.

    A value refused offline (a secret of this environment's shape whose checksum is wrong:
    domain/secrets.py) is counted by `refuse_offline` in this process's memory only, against the
    same budgets and windows: it must cost no Redis command, and what it counts bounds junk that
    costs microseconds, not guesses (such a value can never be a right secret). Junk beyond the
    subject's or the address's budget is answered RateLimited instead; and an address whose
    offline count is spent is refused any check on this process, its right secrets included.
    A subject's offline count never refuses a check: whoever sends junk naming a clientId must
    not lock its owner out (known addresses are in Redis, which the offline path never reads).

    `redis` None means the in-process memory backend (one process only: `m2m dev`). When Redis
    cannot answer, the limiter fails open: the request goes on, counted in this process's memory
    only. Availability wins over exact throttling here, because refusing every exchange while
    Redis is down would take the whole service down with it.
    """

    def __init__(
        self,
        *,
        redis: Redis | None,
        prefix: str,
        per_client: int = DEFAULT_PER_CLIENT,
        per_address: int = DEFAULT_PER_ADDRESS,
        vendor_overall: int = VENDOR_FAILURES_OVERALL,
        vendor_per_address: int = VENDOR_FAILURES_PER_ADDRESS,
        window_seconds: int = WINDOW_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}{KEY_SPACE}"
        self.clients = Budget("client", per_client, per_address)
        self.vendor = Budget("vendor", vendor_overall, vendor_per_address)
        self._window_seconds = window_seconds
        self._memory = _MemoryCounts()
        self._offline = _MemoryCounts()
        self._redis_retry_at = 0.0
        self._reserve_script = redis.register_script(_RESERVE) if redis is not None else None

    @asynccontextmanager
    async def checking(
        self, budget: Budget, subject: str, *, address: str, now: datetime
    ) -> AsyncIterator[None]:
        """Around one secret check of `subject` from `address`: RateLimited (before the check)
        when a budget is spent. The check counts as a failure if it ends in Unauthenticated; if
        it ends without an error it is a success, and the address becomes known to the subject;
        any other end (overload, an unreachable database) counts as neither."""
        self._refuse_if_spent_offline(budget, self._reservation(budget, subject, address, now), now)
        reservation = await self._reserve(budget, subject, address, now)
        try:
            yield
        except Unauthenticated:
            raise
        except BaseException:
            await self._give_back(reservation, now=now, known_until=None)
            raise
        until = now.timestamp() + KNOWN_ADDRESS_SECONDS
        await self._give_back(reservation, now=now, known_until=until)

    def refuse_offline(self, budget: Budget, subject: str, *, address: str, now: datetime) -> None:
        """Count one failure refused without any I/O, in this process's memory: RateLimited
        when the budget is already spent, else the failure is counted (and the caller refuses
        the request as it would a wrong secret)."""
        reservation = dataclasses.replace(
            self._reservation(budget, subject, address, now), in_memory=True
        )
        if not self._offline.reserve(reservation, budget, now.timestamp()):
            raise RateLimited(TOO_MANY, self._retry_after(reservation.window, now))

    def _refuse_if_spent_offline(
        self, budget: Budget, reservation: _Reservation, now: datetime
    ) -> None:
        if self._offline.address_spent(reservation, budget):
            raise RateLimited(TOO_MANY, self._retry_after(reservation.window, now))

    async def reset(self) -> None:
        """Forget every count and known address (tests; an operator unblocking a client)."""
        self._memory.clear()
        self._offline.clear()
        if self._redis is None:
            return
        pattern = _glob_escape(self._prefix) + "*"
        keys = [key async for key in self._redis.scan_iter(match=pattern, count=1000)]
        if keys:
            await self._redis.delete(*keys)

    async def _reserve(
        self, budget: Budget, subject: str, address: str, now: datetime
    ) -> _Reservation:
        reservation = self._reservation(budget, subject, address, now)
        window = reservation.window
        admitted = (
            None
            if reservation.in_memory
            else await self._reserve_in_redis(reservation, budget, now)
        )
        if admitted is None:
            reservation = dataclasses.replace(reservation, in_memory=True)
            admitted = self._memory.reserve(reservation, budget, now.timestamp())
        if not admitted:
            raise RateLimited(TOO_MANY, self._retry_after(window, now))
        return reservation

    def _scope(self, budget: Budget) -> str:
        return f"{self._prefix}{budget.scope}:"

    def _reservation(
        self, budget: Budget, subject: str, address: str, now: datetime
    ) -> _Reservation:
        window = math.floor(now.timestamp()) // self._window_seconds
        scope = self._scope(budget)
        return _Reservation(
            subject_key=f"{scope}subject:{window}:{subject}",
            address_key=f"{scope}address:{window}:{address}",
            known_key=f"{scope}known:{subject}:{address}",
            window=window,
            in_memory=self._in_memory(),
        )

    def _retry_after(self, window: int, now: datetime) -> int:
        window_end = (window + 1) * self._window_seconds
        return max(1, math.ceil(window_end - now.timestamp()))

    async def _reserve_in_redis(
        self, reservation: _Reservation, budget: Budget, now: datetime
    ) -> bool | None:
        """Whether the check is admitted; None when Redis cannot say. One round trip."""
        assert self._reserve_script is not None
        try:
            admitted = await self._reserve_script(
                keys=[reservation.subject_key, reservation.address_key, reservation.known_key],
                args=[
                    budget.per_subject,
                    budget.per_address,
                    self._window_seconds + 1,
                    math.floor(now.timestamp()),
                ],
            )
        except (RedisError, OSError) as error:
            self._redis_failed(error)
            return None
        return bool(admitted)

    async def _give_back(
        self, reservation: _Reservation, *, now: datetime, known_until: float | None
    ) -> None:
        """The check was not a failure: take it off both counts; remember the address as known
        to the subject until `known_until` when given. One round trip."""
        if reservation.in_memory:
            self._memory.give_back(reservation, known_until, now.timestamp())
            return
        assert self._redis is not None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in (reservation.subject_key, reservation.address_key):
                    pipe.decr(key)
                    # Even if the window's key expired meanwhile, what DECR made expires too.
                    pipe.expire(key, self._window_seconds + 1)
                if known_until is not None:
                    pipe.set(
                        reservation.known_key, math.floor(known_until), ex=KNOWN_ADDRESS_SECONDS
                    )
                await pipe.execute()
        except (RedisError, OSError) as error:
            self._redis_failed(error)

    def _in_memory(self) -> bool:
        return self._redis is None or time.monotonic() < self._redis_retry_at

    def _redis_failed(self, error: Exception) -> None:
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        logger.warning(
            "rate limiter cannot reach Redis (%r); counting in this process only for %ss",
            error,
            REDIS_RETRY_SECONDS,
        )


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
