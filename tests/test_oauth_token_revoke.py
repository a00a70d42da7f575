"""POST /oauth/revoke (RFC 7009): a client revokes its own refresh tokens and learns nothing."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.models import AuditEvent, RefreshToken
from tests.factories import Factory, refresh_rows
from tests.steps import (
    INVALID_REFRESH,
    OAUTH_REVOKE,
    assert_oauth_error,
    basic,
    exchange_ok,
    feed_entries,
    posted,
    refresh,
    refresh_ok,
    simple_credential,
)

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev


async def revoke(
    client: httpx.AsyncClient, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(OAUTH_REVOKE, data=form, headers=headers or {})


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_revokes_its_refresh_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    method: str,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    revoked = (await exchange_ok(client, credential))["refresh_token"]
    sibling = (await exchange_ok(client, credential))["refresh_token"]
    form = {"token": revoked, "token_type_hint": "refresh_token"}
    if method == "client_secret_basic":
        response = await revoke(client, form, basic(credential.client_id, credential.secret))
    else:
        response = await revoke(client, {**form, **posted(credential)})
    assert response.status_code == 200, response.text
    assert response.content == b""

    refused = await refresh(client, revoked)
    assert (refused.status_code, refused.json()) == (401, INVALID_REFRESH)
    # Revocation is not reuse: the credential's other tokens stay usable, nothing is audited.
    await refresh_ok(client, sibling)
    assert (
        await db.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.like("refresh_token.%"))
        )
        == 0
    )


async def test_a_revoked_refresh_tokens_family_goes_on_the_revocation_feed_once(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    services: Services,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    spent = (await exchange_ok(client, credential))["refresh_token"]
    live = (await refresh_ok(client, spent))["refresh_token"]
    family_id = await db.scalar(
        sa.select(RefreshToken.family_id).where(RefreshToken.parent_id.is_not(None))
    )

    async with feed_entries(services) as published:
        # A token used already ends nothing: its family lives on in the token it was rotated to.
        assert (await revoke(client, {"token": spent, **posted(credential)})).status_code == 200
        assert (await revoke(client, {"token": live, **posted(credential)})).status_code == 200
        # Revoked already: nothing new.
        assert (await revoke(client, {"token": live, **posted(credential)})).status_code == 200

    assert published == [
        {"type": "refreshTokenFamily", "familyId": family_id, "clientId": credential.client_id}
    ]


async def test_unknown_or_already_revoked_tokens_are_200_too(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    auth = basic(credential.client_id, credential.secret)
    assert (await revoke(client, {"token": "never-issued"}, auth)).status_code == 200
    assert (await revoke(client, {"token": token}, auth)).status_code == 200
    [row] = await refresh_rows(db, credential.client_id)
    first_revocation = row.revoked_at
    assert first_revocation is not None
    assert (await revoke(client, {"token": token}, auth)).status_code == 200
    [row] = await refresh_rows(db, credential.client_id)
    assert row.revoked_at == first_revocation


async def test_another_clients_token_is_200_and_left_alone(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    owner = await simple_credential(client, vendor, factory)
    stranger = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, owner))["refresh_token"]
    response = await revoke(client, {"token": token, **posted(stranger)})
    assert response.status_code == 200, response.text
    [row] = await refresh_rows(db, owner.client_id)
    assert row.revoked_at is None
    await refresh_ok(client, token)


async def test_a_jwt_cannot_be_revoked(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    access_token = (await exchange_ok(client, credential))["access_token"]
    response = await revoke(
        client,
        {"token": access_token, "token_type_hint": "access_token"},
        basic(credential.client_id, credential.secret),
    )
    assert_oauth_error(response, 400, "unsupported_token_type")


@pytest.mark.parametrize("secret", [None, "wrong"], ids=["no authentication", "wrong secret"])
async def test_revocation_needs_client_authentication(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    db: AsyncSession,
    secret: str | None,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    token = (await exchange_ok(client, credential))["refresh_token"]
    headers = basic(credential.client_id, secret) if secret else {}
    response = await revoke(client, {"token": token}, headers)
    assert_oauth_error(response, 401, "invalid_client")
    [row] = await refresh_rows(db, credential.client_id)
    assert row.revoked_at is None


@pytest.mark.parametrize(
    ("label", "content", "content_type"),
    [
        ("missing token", b"token_type_hint=refresh_token", "application/x-www-form-urlencoded"),
        ("json", b'{"token": "abc"}', "application/json"),
        ("repeated token", b"token=a&token=b", "application/x-www-form-urlencoded"),
        ("NUL", b"token=a%00b", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_revocation_is_invalid_request(
    client: httpx.AsyncClient, label: str, content: bytes, content_type: str
) -> None:
    response = await client.post(
        OAUTH_REVOKE,
        content=content,
        headers={"content-type": content_type, **basic("a", "b")},
    )
    assert_oauth_error(response, 400, "invalid_request")
