"""Vendor authentication and the environment configuration routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEvent, Environment
from tests.factories import Factory
from tests.suite import VENDOR_CLIENT_ID, VENDOR_SECRET

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev

CONFIG = "/identity/resources/configurations/v1"


async def test_vendor_authenticates_with_environment_credentials(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/auth/vendor/", json={"clientId": VENDOR_CLIENT_ID, "secret": VENDOR_SECRET}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiresIn"}
    assert body["expiresIn"] == 3600


async def test_wrong_vendor_secret_and_wrong_client_id_look_the_same(
    client: httpx.AsyncClient,
) -> None:
    wrong_secret = await client.post(
        "/auth/vendor", json={"clientId": VENDOR_CLIENT_ID, "secret": "nope"}
    )
    wrong_id = await client.post(
        "/auth/vendor", json={"clientId": "other", "secret": VENDOR_SECRET}
    )
    assert wrong_secret.status_code == wrong_id.status_code == 401
    assert wrong_secret.json() == wrong_id.json() == {"errors": ["Invalid vendor credentials"]}


async def test_configuration_needs_a_vendor_token(client: httpx.AsyncClient) -> None:
    assert (await client.get(CONFIG)).status_code == 401
    forged = {"x-access-token": "eyJhbGciOiJub25lIn0.eyJ0eXBlIjoidmVuZG9yIn0."}
    response = await client.get(CONFIG, headers=forged)
    assert response.status_code == 401
    assert response.json() == {"errors": ["Invalid or expired vendor token"]}


async def test_configuration_serves_public_key_and_m2m_settings(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    for path in (CONFIG, CONFIG + "/"):
        response = await client.get(path, headers=vendor)
        assert response.status_code == 200
        body = response.json()
        assert body["apiTokensEnabled"] is True
        assert body["machineToMachineAuthStrategy"] == "ClientCredentials"
        assert body["defaultTokenExpiration"] == 86400
        assert body["refreshTokensRotationLimit"] == 100
        assert body["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
        load_pem_public_key(body["publicKey"].encode())


async def test_bearer_header_works_like_x_access_token(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {vendor['x-access-token']}"}
    assert (await client.get(CONFIG, headers=bearer)).status_code == 200


async def test_update_configuration_is_stored_and_audited(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        CONFIG,
        headers=vendor,
        json={
            "apiTokensEnabled": False,
            "machineToMachineAuthStrategy": "AccessToken",
            "defaultTokenExpiration": 600,
            "cookieSameSite": "LAX",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["apiTokensEnabled"] is False
    assert body["machineToMachineAuthStrategy"] == "AccessToken"
    assert body["defaultTokenExpiration"] == 600
    assert body["cookieSameSite"] == "LAX"
    environment = await db.scalar(sa.select(Environment))
    assert environment is not None
    assert environment.api_tokens_enabled is False
    assert environment.m2m_strategy == "AccessToken"
    actions = list(await db.scalars(sa.select(AuditEvent.action)))
    assert actions == ["configuration.updated"]
    again = await client.get(CONFIG, headers=vendor)
    assert again.json()["defaultTokenExpiration"] == 600


async def test_bad_configuration_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], db: AsyncSession
) -> None:
    bad_bodies: list[Any] = [
        {"apiTokensEnabled": "no"},
        {"apiTokensEnabled": "false"},
        {"defaultTokenExpiration": "600"},
        {"machineToMachineAuthStrategy": "Password"},
        {"defaultTokenExpiration": 0},
        {"defaultTokenExpiration": 1.5},
        {"jwtAlgorithm": "HS256"},
        {"tenantId": "t1"},
        [1, 2],
    ]
    for body in bad_bodies:
        response = await client.post(CONFIG, headers=vendor, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["errors"], body
    malformed = await client.post(
        CONFIG, headers={**vendor, "content-type": "application/json"}, content=b"{oops"
    )
    assert malformed.status_code == 400
    environment = await db.scalar(sa.select(Environment))
    assert environment is not None
    assert environment.api_tokens_enabled is True
    assert environment.default_token_expiration == 86400
    assert list(await db.scalars(sa.select(AuditEvent))) == []


async def test_oversized_body_is_refused_with_413(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    huge = b'{"cookieSameSite": "' + b"x" * 200_000 + b'"}'
    response = await client.post(
        CONFIG, headers={**vendor, "content-type": "application/json"}, content=huge
    )
    assert response.status_code == 413
    assert response.json()["errors"]


async def test_basic_configuration_gives_the_vendor_and_members_the_strategy_and_force_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, end_user: Any
) -> None:
    tenant = await factory.tenant()
    member = await factory.user(tenant.id)
    changed = await client.post(
        CONFIG,
        headers=vendor,
        json={"machineToMachineAuthStrategy": "AccessToken", "forcePermissions": True},
    )
    assert changed.status_code == 201, changed.text

    by_vendor = await client.get(f"{CONFIG}/basic", headers=vendor)
    by_member = await client.get(f"{CONFIG}/basic", headers=end_user(member.id, tenant.id))
    by_stranger = await client.get(f"{CONFIG}/basic", headers=end_user("nobody", tenant.id))
    anonymous = await client.get(f"{CONFIG}/basic")

    expected = {"forcePermissions": True, "machineToMachineAuthStrategy": "AccessToken"}
    assert (by_vendor.status_code, by_vendor.json()) == (200, expected)
    assert (by_member.status_code, by_member.json()) == (200, expected)
    assert (by_stranger.status_code, anonymous.status_code) == (403, 401)
