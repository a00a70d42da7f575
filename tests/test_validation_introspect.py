"""POST /oauth/introspect (RFC 7662): the vendor asks about either kind of token."""

from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
import pytest
from freezegun import freeze_time

from api.state import Services
from domain.clock import utcnow
from domain.settings import Settings
from tests.factories import READ, Factory, build_scene
from tests.steps import (
    TENANT_ACCESS,
    configure,
    create_access_token,
    create_credential,
    credential_jwt,
    delete_token,
)

pytestmark = [
    pytest.mark.both_backends,  # the same behaviour on serve and dev
    # Other tests change the database behind the cache's back: start from an empty one.
    pytest.mark.usefixtures("fresh_validity_cache"),
]

INTROSPECT = "/oauth/introspect"


async def introspect(
    client: httpx.AsyncClient, headers: dict[str, str], token: str
) -> httpx.Response:
    return await client.post(INTROSPECT, headers=headers, data={"token": token})


async def test_an_active_user_access_token_is_described(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, settings: Settings
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    claims = jwt.decode(token["secret"], options={"verify_signature": False})

    response = await introspect(client, vendor, token["secret"])

    assert response.status_code == 200, response.text
    assert response.json() == {
        "active": True,
        "token_type": "access_token",
        "type": "userAccessToken",
        "sub": token["id"],
        "iss": settings.issuer,
        "iat": claims["iat"],
        "tenantId": scene.tenant.id,
        "userId": scene.user.id,
        "roles": ["reader"],
        "permissions": [READ],
    }


async def test_an_active_client_credential_jwt_is_described_with_its_client_id(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    token = credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)
    claims = jwt.decode(token, options={"verify_signature": False})

    response = await introspect(client, vendor, token)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "active": True,
        "token_type": "Bearer",
        "type": "tenantApiToken",
        "sub": credential["clientId"],
        "client_id": credential["clientId"],
        "iss": settings.issuer,
        "iat": claims["iat"],
        "exp": claims["exp"],
        "tenantId": scene.tenant.id,
        "roles": ["reader"],
        "permissions": [READ],
    }


async def test_a_token_type_hint_changes_nothing(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)

    response = await client.post(
        INTROSPECT,
        headers=vendor,
        data={"token": token["secret"], "token_type_hint": "refresh_token"},
    )

    assert response.json()["active"] is True


async def test_inactive_tokens_are_exactly_active_false(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    deleted = await create_access_token(client, vendor, scene.tenant.id)
    expiring = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    await delete_token(client, vendor, TENANT_ACCESS, deleted["id"], scene.tenant.id)

    for token in ("garbage", "a.b.c", deleted["secret"]):
        response = await introspect(client, vendor, token)
        assert response.status_code == 200
        assert response.json() == {"active": False}
    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        response = await introspect(client, vendor, expiring["secret"])
    assert response.json() == {"active": False}


async def test_every_token_is_inactive_while_m2m_is_disabled(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)
    assert (await introspect(client, vendor, token["secret"])).json()["active"] is True

    await configure(client, vendor, apiTokensEnabled=False)

    assert (await introspect(client, vendor, token["secret"])).json() == {"active": False}
    await configure(client, vendor, apiTokensEnabled=True)
    assert (await introspect(client, vendor, token["secret"])).json()["active"] is True


async def test_a_vendor_token_is_inactive_and_nothing_more(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    response = await introspect(client, vendor, vendor["x-access-token"])

    assert response.status_code == 200
    assert response.json() == {"active": False}


@pytest.mark.parametrize("auth", ["none", "machine token", "wrong vendor token"])
async def test_only_the_vendor_may_introspect(
    auth: str, client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)
    headers = {
        "none": {},
        "machine token": {"Authorization": f"Bearer {token['secret']}"},
        "wrong vendor token": {"x-access-token": vendor["x-access-token"][:-4] + "AAAA"},
    }[auth]

    response = await introspect(client, headers, token["secret"])

    assert response.status_code == 401
    assert set(response.json()) == {"errors"}


async def test_introspection_refuses_a_form_with_nul_or_a_repeated_field(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    form = {**vendor, "content-type": "application/x-www-form-urlencoded"}
    nul = await client.post(INTROSPECT, headers=form, content=b"token=x&token_type_hint=a%00b")
    repeated = await client.post(INTROSPECT, headers=form, content=b"token=x&token=y")

    assert nul.status_code == 400
    assert nul.json() == {"errors": ["The form must not contain NUL characters"]}
    assert repeated.status_code == 400
    assert repeated.json() == {"errors": ["`token` must not be repeated"]}


async def test_introspection_without_a_token_is_a_bad_request(
    client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    form = await client.post(INTROSPECT, headers=vendor, data={"token_type_hint": "access_token"})
    as_json = await client.post(INTROSPECT, headers=vendor, json={"token": "x"})

    assert form.status_code == 400
    assert as_json.status_code == 400
    assert set(form.json()) == {"errors"}
