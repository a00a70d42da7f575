"""Standard OAuth 2.0 clients work unchanged: authlib's client, and PyJWT's PyJWKClient."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from litestar import Litestar

from domain.settings import Settings
from tests.factories import Factory

TOKEN_URL = "http://m2m.test/oauth/token"
TENANT_API = "/identity/resources/tenants/api-tokens/v2"


async def _credential(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> dict[str, Any]:
    tenant = await factory.tenant()
    role = await factory.role("reader", permission_keys=["fe.secure.read.tenantApiTokens"])
    response = await client.post(
        TENANT_API, headers={**vendor, "frontegg-tenant-id": tenant.id}, json={"roleIds": [role.id]}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_completes_client_credentials_and_refresh(
    app: Litestar,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    settings: Settings,
    auth_method: str,
) -> None:
    credential = await _credential(client, vendor, factory)
    async with AsyncOAuth2Client(
        client_id=credential["clientId"],
        client_secret=credential["secret"],
        token_endpoint_auth_method=auth_method,
        transport=httpx.ASGITransport(app=app),
    ) as oauth:
        token = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] > 0
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        assert claims["sub"] == credential["clientId"]
        assert claims["iss"] == settings.issuer

        refreshed = await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed["refresh_token"] != token["refresh_token"]

        # The refresh token just used is spent: authlib surfaces the OAuth error.
        with pytest.raises(Exception, match="invalid_grant"):
            await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])


async def test_pyjwks_client_verifies_issued_jwts_from_the_jwks(
    live_server: str,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    settings: Settings,
) -> None:
    credential = await _credential(client, vendor, factory)
    exchanged = await client.post(
        "/identity/resources/auth/v2/api-token",
        json={"clientId": credential["clientId"], "secret": credential["secret"]},
    )
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["access_token"]

    jwks = jwt.PyJWKClient(f"{live_server}/.well-known/jwks.json")
    key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer=settings.issuer)
    assert claims["sub"] == credential["clientId"]
    assert claims["type"] == "tenantApiToken"
    assert claims["roles"] == ["reader"]
