"""The revocation feed: two real `m2m serve` processes, the README's consumer following one of
them, revocations made through the other; resuming with Last-Event-ID; resync."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.clock import utcnow
from domain.models import AccessToken, User
from domain.revocations import Resync, RevocationFeed
from domain.settings import Settings
from tests.factories import Factory, add_access_token
from tests.kinds import fe_permission_id
from tests.processes import running_server
from tests.suite import REDIS_URL, VENDOR_CLIENT_ID, VENDOR_SECRET

README = Path(__file__).resolve().parent.parent / "README.md"
STREAM = "/revocations/stream"
TENANT_API = "/identity/resources/tenants/api-tokens/v1"
READ_TOKENS = fe_permission_id("fe.secure.read.tenantApiTokens")


def readme_consumer() -> Any:
    """The `RevokedIds` class exactly as the README shows it."""
    text = README.read_text()
    block = re.search(
        r"<!-- revocation-consumer:start -->\n```python\n(.*?)```\n"
        r"<!-- revocation-consumer:end -->",
        text,
        re.S,
    )
    assert block is not None, "the README's consumer is missing"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md consumer", "exec"), namespace)
    return namespace["RevokedIds"]


@pytest.fixture
def two_servers(settings: Settings, engine: AsyncEngine) -> Iterator[tuple[str, str]]:
    with running_server(settings) as first, running_server(settings) as second:
        yield first, second


def vendor_token(base: str) -> str:
    response = httpx.post(
        f"{base}/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def new_credential(base: str, token: str, tenant_id: str) -> str:
    response = httpx.post(
        f"{base}/identity/resources/tenants/api-tokens/v2",
        headers={"x-access-token": token, "frontegg-tenant-id": tenant_id},
        json={"metadata": {}, "permissionIds": [READ_TOKENS]},
    )
    assert response.status_code == 201, response.text
    client_id: str = response.json()["clientId"]
    return client_id


def delete_credential(base: str, token: str, tenant_id: str, client_id: str) -> None:
    response = httpx.delete(
        f"{base}{TENANT_API}/{client_id}",
        headers={"x-access-token": token, "frontegg-tenant-id": tenant_id},
    )
    assert response.status_code == 200, response.text


def delete_tenant(base: str, token: str, tenant_id: str) -> None:
    response = httpx.delete(
        f"{base}/tenants/resources/tenants/v1/{tenant_id}", headers={"x-access-token": token}
    )
    assert response.status_code in (200, 204), response.text


def revoke_every_token(base: str, token: str, owner: str) -> httpx.Response:
    """DELETE <owner>/tokens: every token of a user or an account, as the vendor."""
    response = httpx.delete(f"{base}{owner}/tokens", headers={"x-access-token": token})
    assert response.status_code == 200, response.text
    return response


class Following:
    """The README consumer following a server in a thread of its own."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=consumer.follow, args=(self.stop,), daemon=True)

    def __enter__(self) -> Following:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # The thread applies nothing from now on, and leaves at the stream's next line.
        self.stop.set()

    def wait_for(self, check: Any, within: float = 10.0) -> float:
        """Seconds until `check(consumer)` held (the consumer notifies on each event)."""
        started = time.monotonic()
        with self.consumer.changed:
            while not check(self.consumer):
                left = within - (time.monotonic() - started)
                assert left > 0, "the consumer did not see it in time"
                self.consumer.changed.wait(left)
        return time.monotonic() - started


def connected(following: Following, first: str, token: str, tenant_id: str) -> None:
    """Wait until the consumer's stream is open: a revocation made now reaches it."""
    probe = new_credential(first, token, tenant_id)
    delete_credential(first, token, tenant_id, probe)
    following.wait_for(lambda consumer: probe in consumer.ids, within=20)


async def test_a_revocation_on_one_process_reaches_a_consumer_of_another_within_100_ms(
    two_servers: tuple[str, str], factory: Factory
) -> None:
    first, second = two_servers
    tenant = await factory.tenant()
    token = vendor_token(first)
    consumer = readme_consumer()(first, token)
    claims = {"sub": new_credential(second, token, tenant.id), "tenantId": tenant.id}
    with Following(consumer) as following:
        connected(following, first, token, tenant.id)
        assert consumer.revoked(claims) is False
        after_published, after_answered, whole_request = [], [], []
        for _ in range(5):
            client_id = new_credential(second, token, tenant.id)
            sent = time.monotonic()
            delete_credential(second, token, tenant.id, client_id)
            answered = time.monotonic()
            following.wait_for(lambda consumer, cid=client_id: cid in consumer.ids)
            seen, seen_at = time.monotonic(), time.time()
            # The entry's id is the Redis clock (this host's) when it was published, just
            # after the commit.
            published_at = int(consumer.last_event_id.split("-")[0]) / 1000
            after_published.append(seen_at - published_at)
            after_answered.append(max(seen - answered, 0.0))
            whole_request.append(seen - sent)
        delete_credential(second, token, tenant.id, claims["sub"])
        following.wait_for(lambda consumer: claims["sub"] in consumer.ids)
    assert consumer.revoked(claims) is True
    print(
        "revocation feed, across processes, seconds: after publication "
        f"{after_published}; after the DELETE answered {after_answered}; "
        f"from the DELETE sent {whole_request}"
    )
    assert max(after_published) < 0.1, after_published
    assert max(after_answered) < 0.1, after_answered


async def test_a_consumer_reconnecting_after_a_gap_receives_what_it_missed(
    two_servers: tuple[str, str], factory: Factory
) -> None:
    first, second = two_servers
    tenant = await factory.tenant()
    other = await factory.tenant()
    token = vendor_token(first)
    consumer = readme_consumer()(first, token)
    with Following(consumer) as following:
        connected(following, first, token, tenant.id)
    resume_from = consumer.last_event_id
    assert resume_from is not None
    missed = [new_credential(second, token, tenant.id) for _ in range(3)]
    for client_id in missed:
        delete_credential(second, token, tenant.id, client_id)
    delete_tenant(second, token, other.id)
    assert not set(missed) & consumer.ids
    with Following(consumer) as following:
        following.wait_for(lambda consumer: other.id in consumer.tenants)
    assert set(missed) <= consumer.ids
    assert consumer.revoked({"sub": "x", "tenantId": other.id}) is True
    assert consumer.unsure_until == 0.0  # nothing was missed: no resync


async def test_a_last_event_id_older_than_the_retention_gets_a_resync(
    live_server: str, settings: Settings, factory: Factory
) -> None:
    tenant = await factory.tenant()
    token = vendor_token(live_server)
    consumer = readme_consumer()(live_server, token, max_jwt_seconds=600)
    with Following(consumer) as following:
        connected(following, live_server, token, tenant.id)
    old = consumer.last_event_id
    assert old is not None
    for _ in range(2):
        client_id = new_credential(live_server, token, tenant.id)
        delete_credential(live_server, token, tenant.id, client_id)
    # Time passes beyond the retention: the next publication trims what is older. (A feed of
    # no retention at all trims everything before its own entry.)
    redis = Redis.from_url(REDIS_URL)
    try:
        no_retention = RevocationFeed(redis, settings.redis_prefix, retention_seconds=0)
        await no_retention.publish([{"type": "user", "userId": "someone"}])
    finally:
        await redis.aclose()
    with Following(consumer) as following:
        following.wait_for(lambda consumer: consumer.unsure_until > 0)
    assert consumer.revoked({"sub": "anything"}) is None  # ask the service for a while
    # A Last-Event-ID this feed never gave (Redis was reset) is a resync too; a malformed one 400.
    for last, expected in (("99999999999999-0", 200), ("not-an-id", 400)):
        with httpx.stream(
            "GET",
            f"{live_server}{STREAM}",
            headers={"x-access-token": token, "last-event-id": last},
            timeout=10,
        ) as response:
            assert response.status_code == expected
            if expected == 200:
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("data:"):
                        break
                assert "event: resync" in lines


async def test_the_feed_trims_entries_older_than_its_retention_and_says_resync(
    redis_prefix: str,
) -> None:
    redis = Redis.from_url(REDIS_URL)
    prefix = f"{redis_prefix}trim-{time.time_ns()}:"
    feed = RevocationFeed(redis, prefix, retention_seconds=60)
    try:
        # Two entries from long ago (ids are milliseconds since the epoch, on Redis's clock).
        for old in ("1000-0", "2000-0"):
            await redis.xadd(f"{prefix}revocations", {"data": '{"type":"old"}'}, id=old)
        assert await feed.gap((1000, 0)) is None  # nothing trimmed yet
        await feed.publish([{"type": "user", "userId": "u"}])
        assert isinstance(await feed.gap((1000, 0)), Resync)  # 2000-0 is gone: missed
        assert await feed.gap((2000, 0)) is None  # it had seen everything trimmed
        entries = await feed.after((2000, 0), block_ms=1)
        assert [entry.data for entry in entries] == [{"type": "user", "userId": "u"}]
        assert isinstance(await feed.gap((2**62, 0)), Resync)  # not from this feed
    finally:
        await redis.aclose()


async def test_without_redis_the_feed_keeps_its_entries_in_memory_with_the_same_rules() -> None:
    feed = RevocationFeed(None, "m2m:", retention_seconds=60)
    resync, start = await feed.start(None)
    assert resync is None
    await feed.publish([{"type": "tokens", "accessTokenIds": ["a"], "clientIds": []}])
    await feed.publish([{"type": "m2mSwitch", "enabled": False}])
    entries = await feed.after(start, block_ms=1)
    assert [entry.data["type"] for entry in entries] == ["tokens", "m2mSwitch"]
    first = tuple(int(part) for part in entries[0].id.split("-"))
    assert [entry.id for entry in await feed.after(first, block_ms=1)] == [entries[1].id]
    assert await feed.after(tuple(int(p) for p in entries[1].id.split("-")), block_ms=1) == []
    resync, _ = await feed.start((2**62, 0))
    assert isinstance(resync, Resync)


async def test_after_a_revoke_all_the_consumer_refuses_tokens_issued_before_and_accepts_later_ones(
    live_server: str, factory: Factory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await factory.tenant()
    user = await factory.user(tenant.id)
    token = vendor_token(live_server)
    consumer = readme_consumer()(live_server, token)
    before = utcnow() - timedelta(minutes=5)
    made_before = await add_access_token(sessions, tenant.id, user.id, created_at=before)
    with Following(consumer) as following:
        connected(following, live_server, token, tenant.id)
        answer = revoke_every_token(live_server, token, f"/identity/resources/users/v1/{user.id}")
        following.wait_for(lambda consumer: user.id in consumer.users_revoked_at)
        revoked_at = consumer.users_revoked_at[user.id]
        # The answer's revokedAt (milliseconds) is the entry's instant (microseconds).
        said = datetime.fromisoformat(answer.json()["revokedAt"].replace("Z", "+00:00"))
        assert 0 <= revoked_at - said.timestamp() < 0.001
        revoke_every_token(live_server, token, f"/tenants/resources/tenants/v1/{tenant.id}")
        following.wait_for(lambda consumer: tenant.id in consumer.tenants_revoked_at)
    # A revoke-all is not a deletion: the user and the account stay.
    assert user.id not in consumer.users
    assert tenant.id not in consumer.tenants
    after = datetime.fromtimestamp(consumer.tenants_revoked_at[tenant.id] + 2, UTC)
    made_after = await add_access_token(sessions, tenant.id, user.id, created_at=after)
    async with sessions() as session:
        rows = {
            row.id: row
            for row in await session.scalars(
                sa.select(AccessToken).where(AccessToken.id.in_([made_before, made_after]))
            )
        }

    def claims(token_id: str) -> dict[str, Any]:
        row = rows[token_id]
        issued_at = int(row.created_at.timestamp())  # as the service signs `iat`
        return {"sub": token_id, "tenantId": tenant.id, "userId": user.id, "iat": issued_at}

    assert consumer.revoked(claims(made_before)) is True
    assert consumer.revoked(claims(made_after)) is False
    # Issued in the second of the (latest) revoke-all (iat is whole seconds): ask the service.
    same_second = {**claims(made_after), "iat": int(consumer.tenants_revoked_at[tenant.id])}
    assert consumer.revoked(same_second) is None
    # The entry carries the instant the service keeps (the user's new generation).
    async with sessions() as session:
        user_row = await session.get(User, user.id)
        assert user_row is not None
        assert user_row.tokens_revoked_at is not None
        assert user_row.tokens_revoked_at.timestamp() == revoked_at
