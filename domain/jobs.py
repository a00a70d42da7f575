"""The background jobs as plain async functions: expire, prune, cascade, propagate, reconcile.

Celery tasks (`workers/tasks.py`) and the in-process runner of `m2m dev` both run these through
`domain.job_runs.run_job`, which records each run; each job is idempotent (row locks and SKIP
LOCKED, never hope) and returns the counts it records. What a batch changes in the validity cache
is an `AfterCommit`, applied once the batch has committed, as the API does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from domain import audit, events
from domain.after_commit import AfterCommit
from domain.clock import utcnow
from domain.db import StatementTimeouts
from domain.exchange import (
    refresh_tokens_beyond_cap,
    usable_refresh_token,
)
from domain.keys import MasterKey
from domain.last_used import announce_unused_token
from domain.models import (
    ENVIRONMENT_ROW_ID,
    AccessToken,
    AuditEvent,
    ClientCredential,
    Environment,
    JobRun,
    OutboundEvent,
    RefreshToken,
    Tenant,
    User,
    WebhookDelivery,
)
from domain.revocations import RevocationFeed
from domain.settings import Settings
from domain.validity import ValidityCache
from domain.validity.fills import not_deleted, survived_revocations

logger = logging.getLogger("m2m.jobs")

Counts = dict[str, int]

EXPIRE_TOKENS: Final = "expire_tokens"
PRUNE_REFRESH_TOKENS: Final = "prune_refresh_tokens"
CASCADE_DELETIONS: Final = "cascade_deletions"
PROPAGATE_M2M_SWITCH: Final = "propagate_m2m_switch"
RECONCILE_CACHE: Final = "reconcile_cache"
DELETE_UNUSED_TOKENS: Final = "delete_unused_tokens"
PRUNE_AUDIT_EVENTS: Final = "prune_audit_events"
DELIVER_EVENTS: Final = "deliver_events"
WARN_EXPIRING_TOKENS: Final = "warn_expiring_tokens"

# The jobs' statements work on batches, and may wait for a request's row locks (each request's
# statements are bounded by the API's timeouts): bounds above any normal run's, below a hang.
JOB_TIMEOUTS: Final = StatementTimeouts(statement_ms=300_000, lock_ms=30_000)

# A webhook-id need be remembered only while its signature's timestamp is still accepted.
WEBHOOK_ID_RETENTION: Final = timedelta(minutes=15)
JOB_RUN_RETENTION: Final = timedelta(days=30)
# Outbound events, with their delivery logs: past any retry (a day) and a month of history.
EVENT_RETENTION: Final = timedelta(days=30)


class JobQueue(Protocol):
    """Where the API sends a job to run soon (Celery in production, in-process in `m2m dev`).

    Call it only after the commit that the job must see.
    """

    async def enqueue(self, job: str, **arguments: Any) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class JobContext:
    """What a job needs: the database, the validity cache, the clock and its batch size; the
    outbound events' delivery policy and the revocation feed."""

    sessions: async_sessionmaker[AsyncSession]
    validity: ValidityCache
    clock: Callable[[], datetime]
    batch_size: int = 2000
    # The unused-token policy (None: off) and how long the audit trail is kept.
    delete_unused_after_days: int | None = None
    unused_warning_days: int = 7
    audit_retention: timedelta = timedelta(days=365)
    # Outbound events (their delivery rules) and the revocation feed (None: none to publish to).
    events: events.DeliveryPolicy = field(default_factory=events.DeliveryPolicy)
    feed: RevocationFeed | None = None


def job_context(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    validity: ValidityCache,
    master_key: MasterKey | None,
    feed: RevocationFeed | None,
) -> JobContext:
    """The context the settings describe, on the clock every process reads."""
    return JobContext(
        sessions=sessions,
        validity=validity,
        clock=utcnow,
        batch_size=settings.job_batch_size,
        delete_unused_after_days=settings.delete_unused_after_days,
        unused_warning_days=settings.unused_warning_days,
        audit_retention=timedelta(days=settings.audit_retention_days),
        events=events.DeliveryPolicy.from_settings(settings, master_key),
        feed=feed,
    )


@dataclass(frozen=True)
class Schedule:
    """A periodic job and how often it is due."""

    job: str
    every: timedelta


# --- expire tokens ----------------------------------------------------------------------------


async def expire_tokens(context: JobContext) -> Counts:
    """Mark access tokens and credentials whose time has passed, drop them from the validity
    cache, and delete the refresh tokens of the expired credentials, and the access tokens
    rolled into others whose overlap has ended.

    Validation never waits for this: it compares `expires_at` with the clock on every request.
    Rows are claimed with SKIP LOCKED and marked in the same transaction, so two copies running
    at once split the work and a second run finds nothing left.
    """
    now = context.clock()
    counts: Counts = {"access_tokens": 0, "credentials": 0, "refresh_tokens": 0}

    async def mark_tokens(session: AsyncSession, ids: list[str]) -> AfterCommit:
        # A token rolled into another is deleted once its overlap is over, not kept as expired.
        rolled_owners = (
            await session.execute(
                sa.delete(AccessToken)
                .where(AccessToken.id.in_(ids), AccessToken.replaced_by_id.is_not(None))
                .returning(AccessToken.id, AccessToken.tenant_id, AccessToken.user_id)
            )
        ).all()
        rolled = [row[0] for row in rolled_owners]
        expired = sorted(set(ids) - set(rolled))
        owners = (
            await session.execute(
                sa.update(AccessToken)
                .where(AccessToken.id.in_(expired))
                .values(expired_at=now)
                .returning(AccessToken.id, AccessToken.tenant_id, AccessToken.user_id)
            )
        ).all()
        _announce_expired(session, "AccessToken", owners, now)
        _audit_expired(session, "access_token", "AccessToken", [*owners, *rolled_owners], now)
        return (
            AfterCommit()
            .evict_tokens(access_token_ids=expired)
            .delete_tokens(access_token_ids=rolled)
        )

    async def mark_credentials(session: AsyncSession, ids: list[str]) -> AfterCommit:
        owners = (
            await session.execute(
                sa.update(ClientCredential)
                .where(ClientCredential.client_id.in_(ids))
                .values(expired_at=now)
                .returning(
                    ClientCredential.client_id,
                    ClientCredential.tenant_id,
                    ClientCredential.user_id,
                )
            )
        ).all()
        _announce_expired(session, "ApiToken", owners, now)
        refresh = await session.execute(
            sa.delete(RefreshToken).where(RefreshToken.client_id.in_(ids))
        )
        counts["refresh_tokens"] += _rowcount(refresh)
        _audit_expired(session, "client_credential", "ApiToken", owners, now)
        return AfterCommit().evict_tokens(client_ids=ids)

    counts["access_tokens"] = await _in_batches(
        context,
        sa.select(AccessToken.id)
        .where(AccessToken.expires_at <= now, AccessToken.expired_at.is_(None))
        .order_by(AccessToken.expires_at),
        mark_tokens,
    )
    counts["credentials"] = await _in_batches(
        context,
        sa.select(ClientCredential.client_id)
        .where(ClientCredential.expires_at <= now, ClientCredential.expired_at.is_(None))
        .order_by(ClientCredential.expires_at),
        mark_credentials,
    )
    async with context.sessions() as session, session.begin():
        # A webhook id older than the signature tolerance can no longer be replayed.
        webhooks = await session.execute(
            sa.delete(WebhookDelivery).where(
                WebhookDelivery.received_at < now - WEBHOOK_ID_RETENTION
            )
        )
        runs = await session.execute(
            sa.delete(JobRun).where(JobRun.started_at < now - JOB_RUN_RETENTION)
        )
        # Their deliveries and attempts go with them (the delivery log keeps 30 days).
        sent = await session.execute(
            sa.delete(OutboundEvent).where(OutboundEvent.occurred_at < now - EVENT_RETENTION)
        )
    counts["webhook_ids"] = _rowcount(webhooks)
    counts["job_runs"] = _rowcount(runs)
    counts["events"] = _rowcount(sent)
    return counts


def token_event_data(
    token_id: str, tenant_id: str, user_id: str | None, rows: str
) -> dict[str, Any]:
    """What a token event says of its token: id, kind (userApiToken, tenantAccessToken, ...),
    account and, for a personal token, user."""
    kind = f"{'user' if user_id is not None else 'tenant'}{rows}"
    data: dict[str, Any] = {"id": token_id, "kind": kind, "tenantId": tenant_id}
    if user_id is not None:
        data["userId"] = user_id
    return data


def _announce_expired(
    session: AsyncSession, rows: str, owners: Sequence[Any], now: datetime
) -> None:
    for token_id, tenant_id, user_id in owners:
        events.announce(
            session, events.TOKEN_EXPIRED, token_event_data(token_id, tenant_id, user_id, rows), now
        )


def _audit_expired(
    session: AsyncSession, target: str, rows: str, owners: Sequence[Any], now: datetime
) -> None:
    """`<target>.expired` for each (id, tenant, user) of `owners`, in its account's trail (so
    its admins and the console's activity see it), with the kind and, for a personal token,
    the user, as the routes record a token."""
    for token_id, tenant_id, user_id in owners:
        details = token_event_data(token_id, tenant_id, user_id, rows)
        del details["id"], details["tenantId"]
        audit.record(
            session,
            None,
            f"{target}.expired",
            target_type=target,
            target_id=token_id,
            now=now,
            tenant_id=tenant_id,
            details=details,
        )


def _rowcount(result: Any) -> int:
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


async def _in_batches(
    context: JobContext,
    claim: sa.Select[Any],
    act: Callable[[AsyncSession, list[Any]], Awaitable[AfterCommit | None]],
) -> int:
    """Claim up to batch_size ids with `claim` (rows locked, SKIP LOCKED: another copy of the
    job takes other rows), `act` on them in the same transaction, commit, then apply what `act`
    left for after the commit; until a batch comes back short. Returns how many ids were
    claimed in all."""
    total = 0
    while True:
        after = None
        async with context.sessions() as session, session.begin():
            ids = list(
                await session.scalars(
                    claim.limit(context.batch_size).with_for_update(skip_locked=True)
                )
            )
            if ids:
                after = await act(session, ids)
        if after is not None:
            await after.apply(context.validity, feed=context.feed)
        total += len(ids)
        if len(ids) < context.batch_size:
            return total


# --- prune refresh tokens ---------------------------------------------------------------------


async def prune_refresh_tokens(context: JobContext, client_id: str | None = None) -> Counts:
    """Delete refresh tokens that can never be used again: revoked, expired, beyond the newest
    REFRESH_TOKENS_ROTATION_LIMIT usable ones of their credential, and used ones whose family
    has no usable token left. A used token of a live family is kept: presenting it again is
    how reuse is detected (refresh-token rotation, RFC 9700), so it stays until its family is
    dead.

    `client_id` limits the work to one credential (enqueued after its exchanges). Rows are
    claimed with SKIP LOCKED: never waits on an exchange or refresh holding them.
    """
    now = context.clock()
    live_sibling = aliased(RefreshToken, name="live_sibling")
    family_alive = (
        sa.select(live_sibling.id)
        .where(
            live_sibling.family_id == RefreshToken.family_id,
            *usable_refresh_token(live_sibling, now),
        )
        .exists()
    )
    dead = sa.or_(
        RefreshToken.revoked_at.is_not(None),
        RefreshToken.expires_at <= now,
        sa.and_(RefreshToken.used_at.is_not(None), ~family_alive),
    )
    beyond_cap = refresh_tokens_beyond_cap(RefreshToken, now, client_id=client_id)
    scope: list[sa.ColumnElement[bool]] = []
    if client_id is not None:
        scope.append(RefreshToken.client_id == client_id)

    async def delete(session: AsyncSession, ids: list[str]) -> None:
        await session.execute(sa.delete(RefreshToken).where(RefreshToken.id.in_(ids)))

    claim = sa.select(RefreshToken.id).where(*scope, sa.or_(dead, RefreshToken.id.in_(beyond_cap)))
    return {"refresh_tokens": await _in_batches(context, claim, delete)}


# --- user and tenant deletion cascade ---------------------------------------------------------


async def cascade_deletions(
    context: JobContext, user_id: str | None = None, tenant_id: str | None = None
) -> Counts:
    """Finish deletions: delete every credential, refresh token and access token of deleted
    users and tenants (those named, or every one pending), in batches that each commit, then the
    user or tenant row itself. Finish "revoke every token" the same way: delete the tokens that
    users and tenants (still there) made until their `tokens_revoked_at`.

    The deletion already made their tokens invalid (the row is marked and the validity cache
    holds its tombstone); this is the cleanup. A batch that commits stays done, so a worker
    killed halfway resumes where it stopped when the task is delivered again; a user or tenant
    already gone is a no-op.
    """
    async with context.sessions() as session:
        users = sa.select(User.id).where(User.deleted_at.is_not(None))
        tenants = sa.select(Tenant.id).where(Tenant.deleted_at.is_not(None))
        if user_id is not None or tenant_id is not None:
            users = users.where(User.id == user_id)
            tenants = tenants.where(Tenant.id == tenant_id)
        user_ids = list(await session.scalars(users))
        tenant_ids = list(await session.scalars(tenants))
        named = user_id is not None or tenant_id is not None
        revoking_users, revoking_tenants = [], []
        if user_id is not None or not named:
            revoking_users = list(await session.execute(_revoking(User, user_id)))
        if tenant_id is not None or not named:
            revoking_tenants = list(await session.execute(_revoking(Tenant, tenant_id)))
    counts: Counts = {
        "users": 0,
        "tenants": 0,
        "access_tokens": 0,
        "credentials": 0,
        "refresh_tokens": 0,
    }
    for revoking_user, revoked_at in revoking_users:
        await _delete_tokens_of(
            context,
            AccessToken.user_id,
            ClientCredential.user_id,
            revoking_user,
            counts,
            made_until=revoked_at,
        )
    for revoking_tenant, revoked_at in revoking_tenants:
        await _delete_tokens_of(
            context,
            AccessToken.tenant_id,
            ClientCredential.tenant_id,
            revoking_tenant,
            counts,
            made_until=revoked_at,
        )
    for deleted_user in user_ids:
        await _delete_tokens_of(
            context, AccessToken.user_id, ClientCredential.user_id, deleted_user, counts
        )
        async with context.sessions() as session, session.begin():
            gone = await session.execute(
                sa.delete(User).where(User.id == deleted_user, User.deleted_at.is_not(None))
            )
        counts["users"] += _rowcount(gone)
    for deleted_tenant in tenant_ids:
        await _delete_tokens_of(
            context, AccessToken.tenant_id, ClientCredential.tenant_id, deleted_tenant, counts
        )
        counts["users"] += await _in_batches(
            context, sa.select(User.id).where(User.tenant_id == deleted_tenant), _delete_users
        )
        async with context.sessions() as session, session.begin():
            gone = await session.execute(
                sa.delete(Tenant).where(Tenant.id == deleted_tenant, Tenant.deleted_at.is_not(None))
            )
        counts["tenants"] += _rowcount(gone)
    return counts


def _revoking(owner: Any, owner_id: str | None) -> sa.Select[Any]:
    """(id, tokens_revoked_at) of the live users or tenants (the one named, or every one) that
    revoked every token and still have tokens made until then."""
    per_user = owner is User
    tables: tuple[tuple[Any, Any, Any], ...] = (
        (
            AccessToken.id,
            AccessToken.created_at,
            AccessToken.user_id if per_user else AccessToken.tenant_id,
        ),
        (
            ClientCredential.client_id,
            ClientCredential.created_at,
            ClientCredential.user_id if per_user else ClientCredential.tenant_id,
        ),
    )
    doomed = [
        sa.select(token_id)
        .where(token_owner == owner.id, created_at <= owner.tokens_revoked_at)
        .exists()
        for token_id, created_at, token_owner in tables
    ]
    statement = sa.select(owner.id, owner.tokens_revoked_at).where(
        owner.tokens_revoked_at.is_not(None), owner.deleted_at.is_(None), sa.or_(*doomed)
    )
    if owner_id is not None:
        statement = statement.where(owner.id == owner_id)
    return statement


async def _delete_tokens_of(
    context: JobContext,
    token_owner: Any,
    credential_owner: Any,
    owner_id: str,
    counts: Counts,
    made_until: datetime | None = None,
) -> None:
    """Delete, batch by batch, the credentials (with their refresh tokens) and the access
    tokens whose owner column equals `owner_id` (and, given `made_until`, made until then),
    tombstoning each batch in the cache."""

    async def delete_credentials(session: AsyncSession, ids: list[str]) -> AfterCommit:
        refresh = await session.execute(
            sa.delete(RefreshToken).where(RefreshToken.client_id.in_(ids))
        )
        counts["refresh_tokens"] += _rowcount(refresh)
        await session.execute(
            sa.delete(ClientCredential).where(ClientCredential.client_id.in_(ids))
        )
        return AfterCommit().delete_tokens(client_ids=ids)

    async def delete_tokens(session: AsyncSession, ids: list[str]) -> AfterCommit:
        await session.execute(sa.delete(AccessToken).where(AccessToken.id.in_(ids)))
        return AfterCommit().delete_tokens(access_token_ids=ids)

    credentials = [credential_owner == owner_id]
    tokens = [token_owner == owner_id]
    if made_until is not None:
        credentials.append(ClientCredential.created_at <= made_until)
        tokens.append(AccessToken.created_at <= made_until)
    counts["credentials"] += await _in_batches(
        context, sa.select(ClientCredential.client_id).where(*credentials), delete_credentials
    )
    counts["access_tokens"] += await _in_batches(
        context, sa.select(AccessToken.id).where(*tokens), delete_tokens
    )


async def _delete_users(session: AsyncSession, ids: list[str]) -> None:
    await session.execute(sa.delete(User).where(User.id.in_(ids)))


# --- M2M switch and cache reconcile -------------------------------------------------------------


async def propagate_m2m_switch(context: JobContext) -> Counts:
    """Bring the validity cache in line with the committed apiTokensEnabled: the flag in Redis
    and every process's in-process answers. Token entries need no change: disabling never
    touched them, so enabling again restores exactly the tokens still valid."""
    async with context.sessions() as session:
        enabled = await session.scalar(
            sa.select(Environment.api_tokens_enabled).where(Environment.id == ENVIRONMENT_ROW_ID)
        )
    await context.validity.set_m2m_switch(bool(enabled))
    return {"enabled": int(bool(enabled))}


async def reconcile_cache(context: JobContext) -> Counts:
    """Repair every validity-cache entry that disagrees with PostgreSQL."""
    return await context.validity.reconcile(context.clock())


# --- the unused-token policy -----------------------------------------------------------------

_TOKEN_TABLES: Final = (
    (AccessToken, AccessToken.id, "access_token", "AccessToken"),
    (ClientCredential, ClientCredential.client_id, "client_credential", "ApiToken"),
)


async def delete_unused_tokens(context: JobContext) -> Counts:
    """When M2M_DELETE_UNUSED_TOKENS_AFTER_DAYS is set: warn about every token (access token or
    credential, not expired) unused for that many days less M2M_UNUSED_TOKEN_WARNING_DAYS, and
    delete those warned at least the warning's days ago and still unused; a token never used
    counts from its creation. A use clears the warning (domain/last_used.py), so a token is
    never deleted without a warning that many days before. Deletions invalidate as the
    DELETE routes do.
    """
    counts: Counts = {"warned": 0, "deleted": 0}
    days = context.delete_unused_after_days
    if days is None:
        return counts
    now = context.clock()
    warning = timedelta(days=context.unused_warning_days)
    idle_since = now - timedelta(days=days)
    for model, id_column, target, suffix in _TOKEN_TABLES:
        last_used = sa.func.coalesce(model.last_used_at, model.created_at)
        pending = [model.expired_at.is_(None)]

        async def warn(
            session: AsyncSession,
            ids: list[str],
            model: Any = model,
            id_column: Any = id_column,
            target: str = target,
        ) -> None:
            owners = await session.execute(
                sa.update(model)
                .where(id_column.in_(ids))
                .values(unused_warning_at=now)
                .returning(id_column, model.tenant_id, model.user_id, model.last_used_at)
            )
            for token_id, tenant_id, user_id, used_at in owners.all():
                announce_unused_token(
                    session,
                    target_type=target,
                    token_id=token_id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    last_used_at=used_at,
                    deleted_at=now + warning,
                    now=now,
                )

        async def delete(
            session: AsyncSession,
            ids: list[str],
            model: Any = model,
            id_column: Any = id_column,
            target: str = target,
            suffix: str = suffix,
        ) -> AfterCommit:
            gone = (
                await session.execute(
                    sa.delete(model)
                    .where(id_column.in_(ids))
                    .returning(id_column, model.tenant_id, model.user_id)
                )
            ).all()
            for token_id, tenant_id, user_id in gone:
                kind = ("user" if user_id is not None else "tenant") + suffix
                details: dict[str, Any] = {"kind": kind, "reason": "unused", "unusedDays": days}
                if user_id is not None:
                    details["userId"] = user_id
                audit.record(
                    session,
                    None,
                    "token.deleted",
                    target_type=target,
                    target_id=token_id,
                    now=now,
                    tenant_id=tenant_id,
                    details=details,
                )
                # As a DELETE announces it (domain/tokens.py).
                events.announce(
                    session,
                    events.TOKEN_DELETED,
                    token_event_data(token_id, tenant_id, user_id, suffix),
                    now,
                )
            deleted = [row[0] for row in gone]
            if model is AccessToken:
                return AfterCommit().delete_tokens(access_token_ids=deleted)
            return AfterCommit().delete_tokens(client_ids=deleted)

        counts["deleted"] += await _in_batches(
            context,
            sa.select(id_column)
            .where(
                *pending,
                last_used < idle_since,
                model.unused_warning_at <= now - warning,
            )
            .order_by(id_column),
            delete,
        )
        counts["warned"] += await _in_batches(
            context,
            sa.select(id_column)
            .where(*pending, last_used < idle_since + warning, model.unused_warning_at.is_(None))
            .order_by(id_column),
            warn,
        )
    return counts


# --- audit retention --------------------------------------------------------------------------


async def prune_audit_events(context: JobContext) -> Counts:
    """Delete the audit events older than M2M_AUDIT_RETENTION_DAYS, a batch per transaction."""
    now = context.clock()

    async def delete(session: AsyncSession, ids: list[int]) -> None:
        await session.execute(sa.delete(AuditEvent).where(AuditEvent.id.in_(ids)))

    return {
        "audit_events": await _in_batches(
            context, audit.prune_before(now, context.audit_retention), delete
        )
    }


# --- outbound events -----------------------------------------------------------------------------


async def deliver_events(context: JobContext) -> Counts:
    """Dispatch announced events to the endpoints subscribed to them and send what is due."""
    return await events.deliver_due(context.sessions, context.events, context.clock)


def _still_owned(model: Any) -> list[sa.ColumnElement[bool]]:
    """Conditions on `model` (AccessToken or ClientCredential): the token is not dead already
    by a "revoke every token" of its tenant or user, nor by their deletion (its cascade may
    still be running)."""
    tenant_deleted = (
        sa.select(Tenant.id).where(Tenant.id == model.tenant_id, ~not_deleted(Tenant)).exists()
    )
    user_deleted = sa.select(User.id).where(User.id == model.user_id, ~not_deleted(User)).exists()
    return [survived_revocations(model), ~tenant_deleted, ~user_deleted]


async def warn_expiring_tokens(context: JobContext) -> Counts:
    """Announce `token.expiring` once per token and warning (30, 7 and 1 days before expiry by
    default, M2M_EXPIRY_WARNING_DAYS): each token gets the warning of the smallest number of
    days its expiry is within, once (a token created 10 days before its expiry gets the 30-day
    warning at once, then the 7-day and the 1-day ones). A token dead already (revoked with
    every token of its user or account, or theirs deleted) is not warned about."""
    now = context.clock()
    warned = 0
    days = sorted(context.events.expiry_warning_days)
    if not days:
        return {"warnings": 0}
    for rows, model, id_column in (
        ("AccessToken", AccessToken, AccessToken.id),
        ("ApiToken", ClientCredential, ClientCredential.client_id),
    ):
        async with context.sessions() as session, session.begin():
            expiring = (
                await session.execute(
                    sa.select(id_column, model.tenant_id, model.user_id, model.expires_at).where(
                        model.expires_at > now,
                        model.expires_at <= now + timedelta(days=days[-1]),
                        *_still_owned(model),
                    )
                )
            ).all()
            for token_id, tenant_id, user_id, expires_at in expiring:
                assert expires_at is not None  # selected by its value
                # The nearest warning whose time has come: the one this token should have had.
                due = min(day for day in days if expires_at <= now + timedelta(days=day))
                data = {
                    **token_event_data(token_id, tenant_id, user_id, rows),
                    "expiresAt": expires_at.isoformat().replace("+00:00", "Z"),
                    "daysBefore": due,
                }
                once = f"{events.TOKEN_EXPIRING}:{token_id}:{due}"
                if await events.announce_once(session, events.TOKEN_EXPIRING, data, now, once):
                    warned += 1
    return {"warnings": warned}


# --- running and recording ----------------------------------------------------------------------

Job = Callable[..., Awaitable[Counts]]

JOBS: Final[dict[str, Job]] = {
    EXPIRE_TOKENS: expire_tokens,
    PRUNE_REFRESH_TOKENS: prune_refresh_tokens,
    CASCADE_DELETIONS: cascade_deletions,
    PROPAGATE_M2M_SWITCH: propagate_m2m_switch,
    RECONCILE_CACHE: reconcile_cache,
    DELETE_UNUSED_TOKENS: delete_unused_tokens,
    PRUNE_AUDIT_EVENTS: prune_audit_events,
    DELIVER_EVENTS: deliver_events,
    WARN_EXPIRING_TOKENS: warn_expiring_tokens,
}

# The periodic jobs. The cascade is also swept periodically, so that a deletion whose task
# was lost (broker down when it was enqueued) still finishes.
SCHEDULES: Final = (
    Schedule(EXPIRE_TOKENS, timedelta(minutes=1)),
    Schedule(PRUNE_REFRESH_TOKENS, timedelta(minutes=10)),
    Schedule(RECONCILE_CACHE, timedelta(minutes=5)),
    Schedule(CASCADE_DELETIONS, timedelta(minutes=5)),
    Schedule(DELETE_UNUSED_TOKENS, timedelta(hours=1)),
    Schedule(PRUNE_AUDIT_EVENTS, timedelta(hours=1)),
    # Also enqueued after each commit that announced events: this run catches the events
    # announced by jobs, the retries that came due, and a lost enqueue.
    Schedule(DELIVER_EVENTS, timedelta(seconds=10)),
    Schedule(WARN_EXPIRING_TOKENS, timedelta(hours=1)),
)
