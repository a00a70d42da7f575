"""The official Frontegg Python SDK (frontegg 3.0.4), pointed at this service, works unchanged.

The SDK reads FRONTEGG_API_GATEWAY_URL once, when it is first imported: this module starts one
`m2m serve` for all its tests and is the only place in the suite that imports `frontegg`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from freezegun import freeze_time

from domain.clock import utcnow
from domain.settings import Settings
from tests.factories import Factory
from tests.processes import running_server

CONFIG = "/identity/resources/configurations/v1"
TENANT_ACCESS = "/identity/resources/tenants/access-tokens/v1"
USER_ACCESS = "/identity/resources/users/access-tokens/v1"
TENANT_API = "/identity/resources/tenants/api-tokens/v2"
EXCHANGE = "/identity/resources/auth/v2/api-token"
ACCESS_TOKEN = "AccessToken"  # the SDK's header type for X-API-KEY tokens

pytestmark = pytest.mark.processes  # one `m2m serve` for the module


@pytest.fixture(scope="module")
def sdk_base(settings: Settings) -> Iterator[str]:
    with running_server(settings) as base:
        os.environ["FRONTEGG_API_GATEWAY_URL"] = base
        yield base


@pytest.fixture
def sdk(sdk_base: str, settings: Settings, engine: object) -> Any:
    """A freshly initialised SDK (init_app also empties its 10-second access-token cache)."""
    from frontegg.flask import frontegg
    from frontegg.helpers.frontegg_urls import frontegg_urls

    assert frontegg_urls.base_url == sdk_base + "/", "frontegg was imported before this module"
    frontegg.init_app(settings.vendor_client_id, settings.vendor_secret)
    return frontegg


async def _call(function: Any, *args: Any) -> Any:
    """The SDK is synchronous (requests): keep it off the event loop the app shares."""
    return await asyncio.to_thread(function, *args)


async def _switch(client: httpx.AsyncClient, vendor: dict[str, str], **config: Any) -> None:
    response = await client.post(CONFIG, headers=vendor, json=config)
    assert response.status_code == 201, response.text


async def _world(factory: Factory) -> dict[str, Any]:
    tenant = await factory.tenant()
    role = await factory.role("reader", permission_keys=["fe.secure.read.tenantApiTokens"])
    user = await factory.user(tenant.id, roles=[role])
    return {"tenant": tenant.id, "user": user.id, "role": role}


async def test_sdk_authenticates_as_vendor_and_reads_the_public_key(
    sdk: Any, client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    public_key = await _call(sdk.fetch_public_key)
    config = (await client.get(CONFIG, headers=vendor)).json()
    assert public_key == config["publicKey"]
    assert public_key.startswith("-----BEGIN PUBLIC KEY-----")


async def test_sdk_validates_access_tokens_and_fails_them_after_deletion_and_while_disabled(
    sdk: Any, client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await _world(factory)
    await _switch(client, vendor, machineToMachineAuthStrategy="AccessToken")
    tenant_headers = {**vendor, "frontegg-tenant-id": world["tenant"]}
    tenant_token = (
        await client.post(
            TENANT_ACCESS, headers=tenant_headers, json={"roleIds": [world["role"].id]}
        )
    ).json()
    user_token = (
        await client.post(
            USER_ACCESS, headers={**tenant_headers, "frontegg-user-id": world["user"]}, json={}
        )
    ).json()

    for token in (tenant_token, user_token):
        entity = await _call(sdk.validate_identity_on_token, token["secret"], {}, ACCESS_TOKEN)
        assert entity["sub"] == token["id"]
        assert entity["tenantId"] == world["tenant"]

    # Asking for roles makes the SDK fetch the token's roles and permissions from the service.
    entity = await _call(
        sdk.validate_identity_on_token, tenant_token["secret"], {"roles": ["reader"]}, ACCESS_TOKEN
    )
    assert entity["roles"] == ["reader"]
    assert entity["permissions"] == ["fe.secure.read.tenantApiTokens"]

    from frontegg.helpers.exceptions import UnauthenticatedException, UnauthorizedException

    with pytest.raises(UnauthorizedException):
        await _call(
            sdk.validate_identity_on_token,
            tenant_token["secret"],
            {"roles": ["admin"]},
            "AccessToken",
        )

    deleted = await client.delete(f"{TENANT_ACCESS}/{tenant_token['id']}", headers=tenant_headers)
    assert deleted.status_code == 200
    sdk.init_app(sdk.client_id, sdk.api_key)  # the SDK caches active ids for 10 s
    with pytest.raises(UnauthenticatedException):
        await _call(sdk.validate_identity_on_token, tenant_token["secret"], {}, ACCESS_TOKEN)
    assert await _call(sdk.validate_identity_on_token, user_token["secret"], {}, ACCESS_TOKEN)

    await _switch(client, vendor, apiTokensEnabled=False)
    sdk.init_app(sdk.client_id, sdk.api_key)
    with pytest.raises(UnauthenticatedException):
        await _call(sdk.validate_identity_on_token, user_token["secret"], {}, ACCESS_TOKEN)
    # Asking for roles while disabled: the service answers 403 "Api tokens are disabled"; SDK
    # 3.0.4's cache swallows the UnauthenticatedException that becomes on the first call and
    # then fails on None (AttributeError) — still a refusal; later calls hit its cached refusal.
    with_roles = (sdk.validate_identity_on_token, user_token["secret"], {"roles": ["reader"]})
    with pytest.raises((UnauthenticatedException, AttributeError)):
        await _call(*with_roles, ACCESS_TOKEN)
    with pytest.raises(UnauthenticatedException):
        await _call(*with_roles, ACCESS_TOKEN)


async def test_sdk_validates_exchanged_jwts_and_rejects_tampered_expired_and_mistyped_ones(
    sdk: Any, client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    world = await _world(factory)
    tenant_headers = {**vendor, "frontegg-tenant-id": world["tenant"]}
    credential = (
        await client.post(TENANT_API, headers=tenant_headers, json={"roleIds": [world["role"].id]})
    ).json()
    exchanged = await client.post(
        EXCHANGE, json={"clientId": credential["clientId"], "secret": credential["secret"]}
    )
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["access_token"]

    entity = await _call(sdk.validate_identity_on_token, f"Bearer {token}", {}, "JWT")
    assert entity["sub"] == credential["clientId"]
    assert entity["type"] == "tenantApiToken"
    assert entity["roles"] == ["reader"]

    from frontegg.helpers.exceptions import UnauthenticatedException

    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    await _switch(client, vendor, machineToMachineAuthStrategy="AccessToken")
    access = (await client.post(TENANT_ACCESS, headers=tenant_headers, json={"roleIds": []})).json()
    with pytest.raises(UnauthenticatedException):
        await _call(sdk.validate_identity_on_token, f"Bearer {tampered}", {}, "JWT")
    # An access token is the wrong type for the JWT header: SDK 3.0.4 refuses it with a bare
    # Exception (TokenResolver.validate_token_type), not UnauthenticatedException.
    with pytest.raises(Exception) as refused:  # noqa: PT011
        await _call(sdk.validate_identity_on_token, f"Bearer {access['secret']}", {}, "JWT")
    assert refused.type in {Exception, UnauthenticatedException}

    expiry = jwt.decode(token, options={"verify_signature": False})["exp"]
    after_expiry = utcnow() + timedelta(seconds=expiry - utcnow().timestamp() + 60)
    # SDK 3.0.4 lets PyJWT's own error through for an expired JWT.
    with freeze_time(after_expiry, real_asyncio=True), pytest.raises(jwt.ExpiredSignatureError):
        sdk.validate_identity_on_token(f"Bearer {token}", {}, "JWT")
