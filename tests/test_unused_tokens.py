"""The unused-token policy and audit retention (the README's "Unused tokens" and "Audit trail"):
the jobs as domain services on the clock they are given, through run_job as the workers run them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.state import Services
from domain import job_runs, jobs
from domain.jobs import JobContext
from domain.last_used import UsageRecorder
from domain.models import AccessToken, AuditEvent, ClientCredential, OutboundEvent
from domain.settings import ConfigError, load_settings
from tests.factories import Factory
from tests.steps import api_key, create_access_token, simple_credential, validate
from tests.suite import both_backends

pytestmark = both_backends

DAYS = 30
WARNING_DAYS = 7


def policy(
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime],
    *,
    days: int | None = DAYS,
    batch_size: int = 2,
) -> JobContext:
    return JobContext(
        sessions=sessions,
        validity=services.validity,
        clock=clock,
        batch_size=batch_size,
        delete_unused_after_days=days,
        unused_warning_days=WARNING_DAYS,
    )


async def events(db: AsyncSession, action: str) -> list[AuditEvent]:
    return list(
        await db.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
    )


async def exists(db: AsyncSession, token_id: str) -> bool:
    found = await db.scalar(sa.select(AccessToken.id).where(AccessToken.id == token_id))
    return found is not None


async def test_an_unused_token_is_warned_about_days_before_and_then_deleted_everywhere(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    token = await create_access_token(client, vendor, tenant.id)
    created = datetime.now(UTC)
    assert (await validate(client, api_key(token["secret"]))).status_code == 200
    services.usage = UsageRecorder()  # the use above is not written: it counts from creation

    def at(days: float) -> JobContext:
        return policy(services, sessions, lambda: created + timedelta(days=days))

    assert await job_runs.run_job(at(DAYS - WARNING_DAYS - 1), jobs.DELETE_UNUSED_TOKENS) == {
        "warned": 0,
        "deleted": 0,
    }
    assert await job_runs.run_job(at(DAYS - WARNING_DAYS + 0.1), jobs.DELETE_UNUSED_TOKENS) == {
        "warned": 1,
        "deleted": 0,
    }
    (warning,) = await events(db, "token.unused_warning")
    assert (warning.actor_type, warning.actor_id) == ("job", jobs.DELETE_UNUSED_TOKENS)
    assert warning.target_id == token["id"]
    assert warning.tenant_id == tenant.id
    (announced,) = await db.scalars(
        sa.select(OutboundEvent.data).where(OutboundEvent.type == "token.unused_warning")
    )
    assert (announced["id"], announced["kind"], announced["tenantId"]) == (
        token["id"],
        "tenantAccessToken",
        tenant.id,
    )
    assert announced["deletionAt"] == warning.details["deletionAt"]
    # Warned once, however often the job runs; not deleted before the warning's days are out.
    assert await job_runs.run_job(at(DAYS), jobs.DELETE_UNUSED_TOKENS) == {
        "warned": 0,
        "deleted": 0,
    }
    assert await exists(db, token["id"])
    assert (await validate(client, api_key(token["secret"]))).status_code == 200
    services.usage = UsageRecorder()

    assert await job_runs.run_job(at(DAYS + 0.2), jobs.DELETE_UNUSED_TOKENS) == {
        "warned": 0,
        "deleted": 1,
    }
    assert not await exists(db, token["id"])
    assert (await validate(client, api_key(token["secret"]))).status_code == 401
    (deleted,) = await events(db, "token.deleted")
    assert (deleted.actor_type, deleted.actor_id) == ("job", jobs.DELETE_UNUSED_TOKENS)
    assert deleted.details["reason"] == "unused"
    # Announced as a DELETE announces it.
    (gone,) = await db.scalars(
        sa.select(OutboundEvent.data).where(OutboundEvent.type == "token.deleted")
    )
    assert gone == {"id": token["id"], "kind": "tenantAccessToken", "tenantId": tenant.id}


async def test_a_use_after_the_warning_keeps_the_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    created = datetime.now(UTC)

    def at(days: float) -> JobContext:
        return policy(services, sessions, lambda: created + timedelta(days=days))

    counts = await jobs.delete_unused_tokens(at(DAYS - WARNING_DAYS + 1))
    assert counts == {"warned": 1, "deleted": 0}
    recorder = UsageRecorder()
    recorder.note_credential(credential.client_id, created + timedelta(days=DAYS - 2), None)
    await recorder.write(sessions)

    assert await jobs.delete_unused_tokens(at(DAYS + 2)) == {"warned": 0, "deleted": 0}
    row = await db.scalar(
        sa.select(ClientCredential).where(ClientCredential.client_id == credential.client_id)
    )
    assert row is not None
    assert row.unused_warning_at is None


async def test_switching_the_policy_on_warns_first_even_for_tokens_long_unused(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
) -> None:
    tenant = await factory.tenant()
    ids = [(await create_access_token(client, vendor, tenant.id))["id"] for _ in range(5)]
    much_later = datetime.now(UTC) + timedelta(days=400)

    first = await jobs.delete_unused_tokens(policy(services, sessions, lambda: much_later))
    assert first == {"warned": 5, "deleted": 0}  # batches of 2: every batch done
    assert all([await exists(db, token_id) for token_id in ids])
    again = await jobs.delete_unused_tokens(policy(services, sessions, lambda: much_later))
    assert again == {"warned": 0, "deleted": 0}


async def test_two_runs_at_once_warn_and_delete_each_token_once(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
) -> None:
    tenant = await factory.tenant()
    for _ in range(6):
        await create_access_token(client, vendor, tenant.id)
    start = datetime.now(UTC)
    warn_at = start + timedelta(days=DAYS)
    delete_at = warn_at + timedelta(days=WARNING_DAYS + 1)

    warned = await asyncio.gather(
        jobs.delete_unused_tokens(policy(services, sessions, lambda: warn_at)),
        jobs.delete_unused_tokens(policy(services, sessions, lambda: warn_at)),
    )
    assert sum(counts["warned"] for counts in warned) == 6
    deleted = await asyncio.gather(
        jobs.delete_unused_tokens(policy(services, sessions, lambda: delete_at)),
        jobs.delete_unused_tokens(policy(services, sessions, lambda: delete_at)),
    )
    assert sum(counts["deleted"] for counts in deleted) == 6
    assert len(await events(db, "token.unused_warning")) == 6
    assert len(await events(db, "token.deleted")) == 6


async def test_with_the_policy_off_nothing_is_warned_or_deleted(
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    vendor: dict[str, str],
) -> None:
    tenant = await factory.tenant()
    await create_access_token(client, vendor, tenant.id)
    far = datetime.now(UTC) + timedelta(days=4000)
    counts = await jobs.delete_unused_tokens(policy(services, sessions, lambda: far, days=None))
    assert counts == {"warned": 0, "deleted": 0}


def test_the_warning_must_come_before_the_deletion() -> None:
    environment = {"M2M_DELETE_UNUSED_TOKENS_AFTER_DAYS": "7", "M2M_UNUSED_TOKEN_WARNING_DAYS": "7"}
    with pytest.raises(ConfigError, match="M2M_UNUSED_TOKEN_WARNING_DAYS"):
        load_settings(environment, mode="migrate")


# --- audit retention ----------------------------------------------------------------------------


async def test_audit_events_older_than_the_retention_are_pruned_in_batches(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    sessions: async_sessionmaker[AsyncSession],
    db: AsyncSession,
) -> None:
    tenant = await factory.tenant()
    for _ in range(5):
        await create_access_token(client, vendor, tenant.id)
    before = await db.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    assert before is not None
    assert before >= 5
    now = datetime.now(UTC)
    await db.execute(sa.update(AuditEvent).values(at=now - timedelta(days=91)))
    await create_access_token(client, vendor, tenant.id)  # a recent one stays
    await db.commit()
    context = dataclasses.replace(
        policy(services, sessions, lambda: now, batch_size=2),
        audit_retention=timedelta(days=90),
    )

    assert await job_runs.run_job(context, jobs.PRUNE_AUDIT_EVENTS) == {"audit_events": before}
    left = list(await db.scalars(sa.select(AuditEvent.action)))
    assert left  # the recent events
    assert await jobs.prune_audit_events(context) == {"audit_events": 0}
