"""What a transaction leaves to do once it has committed: validity-cache writes and jobs.

A domain call that changes what is valid returns an `AfterCommit`; whoever owns the transaction
(the API's `commit` helper, a job's batch loop) commits first and then applies it. Applying
before the commit could let a concurrent fill cache the old truth again, and a job enqueued
before the commit could run before the rows it needs are visible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domain.jobs import JobQueue
    from domain.revocations import RevocationFeed
    from domain.validity import ValidityCache

logger = logging.getLogger("m2m.revocations")


def _instant(moment: datetime) -> str:
    """An instant on the feed: ISO 8601 in UTC to the microsecond (what the rows hold)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass
class AfterCommit:
    """Cache writes and jobs, in the order they are applied."""

    # Tombstones of a tenant or user generation (its creation or last revoke-all instant): it
    # was deleted, or revoked every token; every token of that generation is invalid from now on.
    # (The feed tells the two apart: `user`/`tenant` for a deletion, `userTokens`/`tenantTokens`
    # with the instant for a revoke-all.)
    deleted_tenants: list[tuple[str, datetime]] = field(default_factory=list)
    deleted_users: list[tuple[str, datetime]] = field(default_factory=list)
    # Tombstones of single tokens that were deleted.
    deleted_access_tokens: list[str] = field(default_factory=list)
    deleted_credentials: list[str] = field(default_factory=list)
    # Entries dropped without a tombstone: the row says why (expired), a fill reads it again.
    evicted_access_tokens: list[str] = field(default_factory=list)
    evicted_credentials: list[str] = field(default_factory=list)
    # An id used again after its owner was deleted: its tombstone would only slow it down.
    recreated_tenants: list[str] = field(default_factory=list)
    recreated_users: list[str] = field(default_factory=list)
    # The M2M switch as just committed, when it was set.
    m2m_switch: bool | None = None
    # Access tokens were created: the lists of valid ones (/active) change.
    new_access_tokens: bool = False
    jobs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Entries of the revocation feed (domain/revocations.py), published after the cache writes.
    # Every deletion above adds its own; the rest (a refresh-token family, the M2M switch, a
    # key rotation) are added by name.
    revocations: list[dict[str, Any]] = field(default_factory=list)

    def delete_tenant(self, tenant_id: str, created_at: datetime) -> AfterCommit:
        self.deleted_tenants.append((tenant_id, created_at))
        return self.revoke("tenant", tenantId=tenant_id)

    def delete_user(self, user_id: str, created_at: datetime) -> AfterCommit:
        self.deleted_users.append((user_id, created_at))
        return self.revoke("user", userId=user_id)

    def revoke_tokens_of_tenant(
        self, tenant_id: str, generation: datetime, revoked_at: datetime
    ) -> AfterCommit:
        """Every token of the account made until `revoked_at` died (revoke-all); the account
        stays. The cache's tombstone is a deletion's; the feed's entry names the instant, so
        that a consumer keeps accepting the tokens made after it."""
        self.deleted_tenants.append((tenant_id, generation))
        return self.revoke("tenantTokens", tenantId=tenant_id, revokedAt=_instant(revoked_at))

    def revoke_tokens_of_user(
        self, user_id: str, generation: datetime, revoked_at: datetime
    ) -> AfterCommit:
        """As `revoke_tokens_of_tenant`, for the user's tokens."""
        self.deleted_users.append((user_id, generation))
        return self.revoke("userTokens", userId=user_id, revokedAt=_instant(revoked_at))

    def delete_tokens(
        self, *, access_token_ids: Sequence[str] = (), client_ids: Sequence[str] = ()
    ) -> AfterCommit:
        self.deleted_access_tokens.extend(access_token_ids)
        self.deleted_credentials.extend(client_ids)
        if access_token_ids or client_ids:
            self.revoke("tokens", accessTokenIds=list(access_token_ids), clientIds=list(client_ids))
        return self

    def revoke(self, kind: str, **ids: Any) -> AfterCommit:
        """A revocation feed entry: `kind` (tokens, user, tenant, userTokens, tenantTokens,
        refreshTokenFamily, refreshTokens, m2mSwitch, signingKey) and the ids it names."""
        self.revocations.append({"type": kind, **ids})
        return self

    def evict_tokens(
        self, *, access_token_ids: Sequence[str] = (), client_ids: Sequence[str] = ()
    ) -> AfterCommit:
        self.evicted_access_tokens.extend(access_token_ids)
        self.evicted_credentials.extend(client_ids)
        return self

    def recreate_tenant(self, tenant_id: str) -> AfterCommit:
        self.recreated_tenants.append(tenant_id)
        return self

    def recreate_user(self, user_id: str) -> AfterCommit:
        self.recreated_users.append(user_id)
        return self

    def set_m2m_switch(self, on: bool) -> AfterCommit:
        self.m2m_switch = on
        return self

    def add_access_tokens(self) -> AfterCommit:
        self.new_access_tokens = True
        return self

    def enqueue(self, job: str, **arguments: Any) -> AfterCommit:
        self.jobs.append((job, arguments))
        return self

    async def apply(
        self,
        validity: ValidityCache,
        jobs: JobQueue | None = None,
        feed: RevocationFeed | None = None,
    ) -> None:
        """Write the cache (in effect on this process before this returns, on every other
        within the cache's propagation bound), publish the revocations, then enqueue the jobs.

        A feed that cannot be reached loses those entries (logged), never fails the request:
        the cache keeps the promise, and a local verifier then learns of them at `exp`."""
        for tenant_id, created_at in self.deleted_tenants:
            await validity.invalidate_tenant(tenant_id, created_at)
        for user_id, created_at in self.deleted_users:
            await validity.invalidate_user(user_id, created_at)
        if self.deleted_access_tokens or self.deleted_credentials:
            await validity.invalidate_tokens(
                access_token_ids=self.deleted_access_tokens, client_ids=self.deleted_credentials
            )
        if self.evicted_access_tokens or self.evicted_credentials:
            await validity.evict_tokens(
                access_token_ids=self.evicted_access_tokens, client_ids=self.evicted_credentials
            )
        for tenant_id in self.recreated_tenants:
            await validity.forget_tenant(tenant_id)
        for user_id in self.recreated_users:
            await validity.forget_user(user_id)
        if self.m2m_switch is not None:
            await validity.set_m2m_switch(self.m2m_switch)
        if self.new_access_tokens:
            await validity.announce_new_access_tokens()
        if self.revocations and feed is not None:
            try:
                await feed.publish(self.revocations)
            except Exception:
                logger.warning(
                    "the revocation feed is unreachable: %d entries not published",
                    len(self.revocations),
                )
        if self.jobs:
            if jobs is None:
                raise RuntimeError("jobs were left to enqueue where no job queue is available")
            for job, arguments in self.jobs:
                await jobs.enqueue(job, **arguments)
