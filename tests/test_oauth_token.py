"""POST /oauth/token (RFC 6749): client_credentials and refresh_token grants, and their errors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api.state import Services
from domain.exchange import EXCHANGE_TOKEN_TYPES
from domain.secrets import sha256_hex
from tests.factories import Factory, refresh_rows
from tests.steps import (
    OAUTH_TOKEN,
    CountingHasher,
    assert_oauth_error,
    basic,
    exchange_ok,
    posted,
    refresh_ok,
    replaced,
    set_environment,
    simple_credential,
)

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

OAUTH_KEYS = {"access_token", "token_type", "expires_in", "refresh_token"}


async def token(
    client: httpx.AsyncClient, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(OAUTH_TOKEN, data=form, headers=headers or {})


# --- client_credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_grant_issues_a_bearer_jwt_and_a_refresh_token(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    method: str,
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {"grant_type": "client_credentials"}
    if method == "client_secret_basic":
        response = await token(client, form, basic(credential.client_id, credential.secret))
    else:
        response = await token(client, {**form, **posted(credential)})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == OAUTH_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    claims = await services.keyring.verify(
        body["access_token"], EXCHANGE_TOKEN_TYPES, datetime.now(UTC)
    )
    assert claims["sub"] == credential.client_id
    await refresh_ok(client, body["refresh_token"])


async def test_basic_credentials_are_form_decoded(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    # Every character percent-encoded, as a strict RFC 6749 client may send it.
    encoded = "".join(f"%{byte:02X}" for byte in credential.secret.encode())
    raw = f"{credential.client_id}:{encoded}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    response = await token(client, {"grant_type": "client_credentials"}, headers)
    assert response.status_code == 200, response.text


async def test_basic_with_the_same_client_id_in_the_form_is_accepted(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {"grant_type": "client_credentials", "client_id": credential.client_id}
    response = await token(client, form, basic(credential.client_id, credential.secret))
    assert response.status_code == 200, response.text
    other = await token(
        client,
        {**form, "client_id": "someone-else"},
        basic(credential.client_id, credential.secret),
    )
    assert_oauth_error(other, 400, "invalid_request")


async def test_unknown_client_and_wrong_secret_are_the_same_invalid_client(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    form = {"grant_type": "client_credentials"}
    wrong = await token(client, form, basic(credential.client_id, "wrong"))
    unknown = await token(client, form, basic("no-such-client", credential.secret))
    for response in (wrong, unknown):
        assert_oauth_error(response, 401, "invalid_client", "Invalid client credentials")
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert response.headers["cache-control"] == "no-store"
    assert wrong.json() == unknown.json()

    posted_wrong = await token(
        client, {**form, "client_id": credential.client_id, "client_secret": "wrong"}
    )
    assert_oauth_error(posted_wrong, 401, "invalid_client", "Invalid client credentials")
    assert "www-authenticate" not in posted_wrong.headers


@pytest.mark.parametrize(
    ("label", "form", "headers"),
    [
        ("no client authentication", {"grant_type": "client_credentials"}, {}),
        ("client_id alone", {"grant_type": "client_credentials", "client_id": "abc"}, {}),
        ("secret alone", {"grant_type": "client_credentials", "client_secret": "abc"}, {}),
        (
            "malformed basic",
            {"grant_type": "client_credentials"},
            {"Authorization": "Basic !!!not-base64"},
        ),
        (
            "basic without colon",
            {"grant_type": "client_credentials"},
            {"Authorization": "Basic " + base64.b64encode(b"just-an-id").decode()},
        ),
    ],
)
async def test_missing_or_malformed_client_authentication_is_invalid_client(
    client: httpx.AsyncClient, label: str, form: dict[str, str], headers: dict[str, str]
) -> None:
    response = await token(client, form, headers)
    assert_oauth_error(response, 401, "invalid_client")


async def test_disabled_m2m_is_unauthorized_client_with_the_spec_message(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    await set_environment(client, vendor, apiTokensEnabled=False)
    response = await token(client, {"grant_type": "client_credentials", **posted(credential)})
    assert_oauth_error(response, 403, "unauthorized_client", "Api tokens are disabled")


# --- refresh_token ---------------------------------------------------------------------------


async def test_refresh_token_grant_rotates_without_client_authentication(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    first = (await exchange_ok(client, credential))["refresh_token"]
    response = await token(client, {"grant_type": "refresh_token", "refresh_token": first})
    assert response.status_code == 200, response.text
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == OAUTH_KEYS
    again = await token(client, {"grant_type": "refresh_token", "refresh_token": first})
    assert_oauth_error(again, 400, "invalid_grant", "Invalid refresh token")
    # That was reuse: the token just issued from `first` is revoked with its family.
    rotated = await token(
        client, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert_oauth_error(rotated, 400, "invalid_grant", "Invalid refresh token")


async def test_refresh_token_grant_with_its_own_client_authentication(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    credential = await simple_credential(client, vendor, factory)
    first = (await exchange_ok(client, credential))["refresh_token"]
    response = await token(
        client,
        {"grant_type": "refresh_token", "refresh_token": first},
        basic(credential.client_id, credential.secret),
    )
    assert response.status_code == 200, response.text


async def test_another_clients_refresh_token_is_invalid_grant_and_stays_usable(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    owner = await simple_credential(client, vendor, factory)
    other = await simple_credential(client, vendor, factory)
    refresh_token = (await exchange_ok(client, owner))["refresh_token"]
    response = await token(
        client, {"grant_type": "refresh_token", "refresh_token": refresh_token, **posted(other)}
    )
    assert_oauth_error(response, 400, "invalid_grant", "Invalid refresh token")
    [row] = await refresh_rows(db, owner.client_id)
    assert row.token_hash == sha256_hex(refresh_token)
    assert row.used_at is None
    await refresh_ok(client, refresh_token)


async def test_refresh_token_grant_with_a_wrong_secret_is_invalid_client(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, db: AsyncSession
) -> None:
    credential = await simple_credential(client, vendor, factory)
    refresh_token = (await exchange_ok(client, credential))["refresh_token"]
    response = await token(
        client,
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        basic(credential.client_id, "wrong"),
    )
    assert_oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")
    [row] = await refresh_rows(db, credential.client_id)
    assert row.used_at is None


# --- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "content", "content_type", "error"),
    [
        (
            "json body",
            b'{"grant_type": "client_credentials"}',
            "application/json",
            "invalid_request",
        ),
        ("no grant_type", b"client_id=a&client_secret=b", None, "invalid_request"),
        ("empty grant_type", b"grant_type=", None, "invalid_request"),
        (
            "password grant",
            b"grant_type=password&username=u&password=p",
            None,
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            b"grant_type=client_credentials&grant_type=refresh_token",
            None,
            "invalid_request",
        ),
        (
            "NUL",
            b"grant_type=client_credentials&client_id=a%00&client_secret=b",
            None,
            "invalid_request",
        ),
        (
            "bad utf-8",
            b"grant_type=client_credentials&client_id=%FF&client_secret=b",
            None,
            "invalid_request",
        ),
        ("malformed form", b"grant_type=client_credentials&&&", None, "invalid_request"),
        (
            "huge secret",
            b"grant_type=client_credentials&client_id=a&client_secret=" + b"s" * 1025,
            None,
            "invalid_request",
        ),
        ("refresh without token", b"grant_type=refresh_token", None, "invalid_request"),
        (
            "huge refresh token",
            b"grant_type=refresh_token&refresh_token=" + b"r" * 1025,
            None,
            "invalid_request",
        ),
        (
            "basic and post at once",
            b"grant_type=client_credentials&client_id=a&client_secret=b",
            "basic",
            "invalid_request",
        ),
    ],
)
async def test_malformed_token_requests_are_400_in_the_oauth_and_spec_shapes(
    client: httpx.AsyncClient,
    db: AsyncSession,
    services: Services,
    label: str,
    content: bytes,
    content_type: str | None,
    error: str,
) -> None:
    headers: dict[str, Any] = {"content-type": "application/x-www-form-urlencoded"}
    if content_type == "basic":
        headers.update(basic("a", "b"))
    elif content_type is not None:
        headers["content-type"] = content_type
    hasher = CountingHasher()
    with replaced(services, "hasher", hasher):
        response = await client.post(OAUTH_TOKEN, content=content, headers=headers)
    hasher.close()
    assert_oauth_error(response, 400, error)
    assert hasher.verified_stored_hash == []
    assert await refresh_rows(db) == []


async def test_an_oversized_body_is_413_in_the_oauth_shape(
    client: httpx.AsyncClient, services: Services
) -> None:
    content = b"grant_type=client_credentials&x=" + b"x" * services.settings.max_body_bytes
    response = await client.post(
        OAUTH_TOKEN,
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_oauth_error(response, 413, "invalid_request")
