"""When each token was last used and from which addresses: uses noted in memory on the hot paths,
written to PostgreSQL in batches (every few seconds and at shutdown) by each process on its own.

Noting a use costs one dict write: validation never waits on the database for it. Several
processes write the same rows: each batch locks its rows (in id order, so two processes never
deadlock), keeps the later time and merges the addresses, so no process's use is lost and none
moves "last used" backwards.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import audit, events
from domain.models import AccessToken, ClientCredential

logger = logging.getLogger("m2m.last_used")

# The header a vendor's API sets, on its validation call, to the address its own caller came
# from: the service cannot see that address itself.
CLIENT_ADDRESS_HEADER: Final = "x-m2m-client-address"
# Distinct addresses kept per token, the most recent first.
ADDRESSES_KEPT: Final = 5
# Rows written per statement batch.
ROWS_PER_BATCH: Final = 500
# A header value longer than any IPv6 address with a zone is no address.
MAX_ADDRESS_BYTES: Final = 64
# Addresses held per token between writes: whoever holds a token may send any header values,
# and memory must not grow with them.
ADDRESSES_HELD: Final = 16


@dataclass
class _Use:
    """One token's uses since the last write: the latest time, and its addresses by latest
    time (insertion order is oldest first)."""

    at: datetime
    addresses: dict[str, datetime] = field(default_factory=dict)


def readable_address(raw: bytes | str | None) -> str | None:
    """The address a header names, normalised, or None when it is not an IP address. A network
    is kept as such: an exchange's client address is an IPv6 client's /64, as the rate limits
    count it (domain/ratelimit.py)."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        if len(raw) > MAX_ADDRESS_BYTES:
            return None
        raw = raw.decode("latin-1")
    text = raw.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(text, strict=False)) if "/" in text else None
    except ValueError:
        return None


def merged_addresses(
    stored: Iterable[dict[str, str]], fresh: dict[str, datetime]
) -> list[dict[str, str]]:
    """The ADDRESSES_KEPT most recent distinct addresses of `stored` (as the row holds them:
    {"address", "at"} newest first) and `fresh`, newest first."""
    latest: dict[str, str] = {}
    for entry in stored:
        address, at = entry.get("address"), entry.get("at")
        if isinstance(address, str) and isinstance(at, str):
            latest[address] = max(at, latest.get(address, at))
    for address, moment in fresh.items():
        stamp = moment.isoformat(timespec="microseconds")
        latest[address] = max(stamp, latest.get(address, stamp))
    newest = sorted(latest.items(), key=lambda item: item[1], reverse=True)[:ADDRESSES_KEPT]
    return [{"address": address, "at": at} for address, at in newest]


class UsageRecorder:
    """The uses this process saw since its last write. `note_*` are for the hot paths (no I/O,
    no parsing: a raw header value is checked only when written); `write` is for the periodic
    task and shutdown."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._tokens: dict[str, _Use] = {}
        self._credentials: dict[str, _Use] = {}

    def note_access_token(self, token_id: str, at: datetime, address: bytes | str | None) -> None:
        if self.enabled:
            self._note(self._tokens, token_id, at, address)

    def note_credential(self, client_id: str, at: datetime, address: bytes | str | None) -> None:
        if self.enabled:
            self._note(self._credentials, client_id, at, address)

    @staticmethod
    def _note(uses: dict[str, _Use], key: str, at: datetime, address: Any) -> None:
        use = uses.get(key)
        if use is None:
            use = uses[key] = _Use(at)
        elif at > use.at:
            use.at = at
        if address is not None:
            # Raw until written: bytes from the header, decoded and checked off the hot path.
            use.addresses[address] = at
            if len(use.addresses) > ADDRESSES_HELD:
                newest = sorted(use.addresses.items(), key=lambda item: item[1])[-ADDRESSES_KEPT:]
                use.addresses = dict(newest)

    @property
    def pending(self) -> int:
        return len(self._tokens) + len(self._credentials)

    async def write(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Write every use noted so far; returns how many tokens it wrote. What a failed write
        held is kept for the next one (merged with what came meanwhile)."""
        tokens, self._tokens = self._tokens, {}
        credentials, self._credentials = self._credentials, {}
        written = 0
        for table, key, taken, keep in (
            (AccessToken.__table__, "id", tokens, self._tokens),
            (ClientCredential.__table__, "client_id", credentials, self._credentials),
        ):
            ids = sorted(taken)
            for start in range(0, len(ids), ROWS_PER_BATCH):
                batch = ids[start : start + ROWS_PER_BATCH]
                try:
                    written += await _write_batch(sessions, table, key, batch, taken)
                except Exception:
                    logger.exception("writing last-used times failed; kept for the next write")
                    for held in ids[start:]:
                        use = taken[held]
                        for address, at in use.addresses.items():
                            self._note(keep, held, at, address)
                        self._note(keep, held, use.at, None)
                    break
        return written


async def _write_batch(
    sessions: async_sessionmaker[AsyncSession],
    table: Any,
    key: str,
    ids: list[str],
    uses: dict[str, _Use],
) -> int:
    """One transaction: lock the batch's rows in id order, merge, update. Rows deleted meanwhile
    are skipped."""
    id_column = table.c[key]
    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                sa.select(id_column, table.c.last_used_at, table.c.last_used_addresses)
                .where(id_column.in_(ids))
                .order_by(id_column)
                .with_for_update()
            )
        ).all()
        changes = []
        for row_id, stored_at, stored_addresses in rows:
            use = uses[row_id]
            fresh = {
                address: at
                for raw, at in use.addresses.items()
                if (address := readable_address(raw)) is not None
            }
            last = use.at if stored_at is None or use.at > stored_at else stored_at
            changes.append(
                {
                    "row_id": row_id,
                    "last_used_at": last,
                    "last_used_addresses": merged_addresses(stored_addresses or [], fresh),
                }
            )
        if changes:
            await session.execute(
                sa.update(table)
                .where(id_column == sa.bindparam("row_id"))
                .values(
                    last_used_at=sa.bindparam("last_used_at"),
                    last_used_addresses=sa.bindparam("last_used_addresses"),
                    # A use answers the unused-token policy's warning: it starts over.
                    unused_warning_at=None,
                ),
                changes,
            )
    return len(changes)


def announce_unused_token(
    session: AsyncSession,
    *,
    target_type: str,
    token_id: str,
    tenant_id: str,
    user_id: str | None,
    last_used_at: datetime | None,
    deleted_at: datetime,
    now: datetime,
) -> None:
    """The unused-token policy's warning that a token will be deleted at `deleted_at` unless it
    is used before: recorded in the audit trail and announced as the outbound
    `token.unused_warning` event."""
    details: dict[str, Any] = {
        "lastUsedAt": last_used_at.isoformat() if last_used_at is not None else None,
        "deletionAt": deleted_at.isoformat(),
    }
    if user_id is not None:
        details["userId"] = user_id
    audit.record(
        session,
        None,
        "token.unused_warning",
        target_type=target_type,
        target_id=token_id,
        now=now,
        tenant_id=tenant_id,
        details=details,
    )
    events.announce(
        session,
        events.TOKEN_UNUSED_WARNING,
        {
            "id": token_id,
            "kind": ("user" if user_id is not None else "tenant")
            + ("AccessToken" if target_type == "access_token" else "ApiToken"),
            "tenantId": tenant_id,
            **details,
        },
        now,
    )
