"""POST /identity/resources/auth/v1/validate: which tokens are valid now, and who they speak for."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from freezegun import freeze_time

from api.schemas.common import iso
from api.state import Services
from domain.clock import utcnow
from domain.models import ClientCredential
from domain.settings import Settings
from domain.validity import ENTRY_TTL_SECONDS
from tests.factories import READ, WRITE, Factory, build_scene
from tests.steps import (
    TENANT_ACCESS,
    TENANT_API,
    USER_ACCESS,
    USER_API,
    api_key,
    bearer,
    configure,
    create_access_token,
    create_credential,
    credential_jwt,
    delete_token,
    finish_jobs,
    validate,
)

pytestmark = [
    pytest.mark.both_backends,  # the same behaviour on serve and dev
    # Other tests change the database behind the cache's back: start from an empty one.
    pytest.mark.usefixtures("fresh_validity_cache"),
]


# --- access tokens ----------------------------------------------------------------------------


async def test_user_access_token_validates_with_the_roles_its_user_holds_now(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)

    response = await validate(client, api_key(token["secret"]))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "userAccessToken",
        "sub": token["id"],
        "tenantId": scene.tenant.id,
        "userId": scene.user.id,
        "roles": ["reader"],
        "permissions": [READ],
    }


async def test_tenant_access_token_validates_with_its_roles_and_their_permissions(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id, scene.writer.id]
    )

    response = await validate(client, api_key(token["secret"]))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "type": "tenantAccessToken",
        "sub": token["id"],
        "tenantId": scene.tenant.id,
        "roles": ["reader", "writer"],
        "permissions": sorted([READ, WRITE]),
    }


async def test_an_expiring_access_token_says_when_it_expires(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, minutes=90)

    response = await validate(client, api_key(token["secret"]))

    assert response.status_code == 200, response.text
    assert response.json()["expires"] == token["expires"]
    assert token["expires"] is not None


async def test_an_expired_access_token_is_invalid(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    assert (await validate(client, api_key(token["secret"]))).status_code == 200

    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        response = await validate(client, api_key(token["secret"]))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Token expired"]}


async def test_role_changes_reach_access_token_validation_within_the_staleness_bound(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    assert (await validate(client, api_key(token["secret"]))).json()["roles"] == ["reader"]
    granted = await client.post(
        f"/identity/resources/users/v1/{scene.user.id}/roles",
        headers={**vendor, "frontegg-tenant-id": scene.tenant.id},
        json={"roleIds": [scene.writer.id]},
    )
    assert granted.status_code == 201, granted.text

    with freeze_time(utcnow() + timedelta(seconds=ENTRY_TTL_SECONDS + 1), real_asyncio=True):
        response = await validate(client, api_key(token["secret"]))

    assert response.json()["roles"] == ["reader", "writer"]
    assert response.json()["permissions"] == sorted([READ, WRITE])


# --- client-credential JWTs -------------------------------------------------------------------


@pytest.mark.parametrize("for_user", [True, False], ids=["user", "tenant"])
async def test_client_credential_jwt_validates_with_the_roles_in_its_claims(
    for_user: bool,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    user_id = scene.user.id if for_user else None
    credential = await create_credential(
        client, vendor, scene.tenant.id, user_id=user_id, role_ids=[scene.reader.id]
    )
    now = utcnow()
    token = credential_jwt(
        services,
        settings,
        credential,
        tenant_id=scene.tenant.id,
        user_id=user_id,
        roles=["reader"],
        permissions=[READ],
        now=now,
    )

    response = await validate(client, bearer(token))

    assert response.status_code == 200, response.text
    expected: dict[str, Any] = {
        "type": "userApiToken" if for_user else "tenantApiToken",
        "sub": credential["clientId"],
        "tenantId": scene.tenant.id,
        "roles": ["reader"],
        "permissions": [READ],
        "expires": iso(datetime.fromtimestamp(int((now + timedelta(hours=1)).timestamp()), UTC)),
    }
    if for_user:
        expected["userId"] = scene.user.id
    assert response.json() == expected


async def test_a_client_credential_jwt_is_invalid_once_it_expires(
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
    token = credential_jwt(
        services, settings, credential, tenant_id=scene.tenant.id, lifetime=timedelta(minutes=5)
    )
    for _ in range(2):
        assert (await validate(client, bearer(token))).status_code == 200

    with freeze_time(utcnow() + timedelta(minutes=6), real_asyncio=True):
        response = await validate(client, bearer(token))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Token expired"]}


async def test_a_credential_that_expires_before_its_jwt_ends_the_jwt_with_it(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id], minutes=1
    )
    token = credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)
    valid = await validate(client, bearer(token))
    assert valid.status_code == 200, valid.text
    assert valid.json()["expires"] == credential["expires"]

    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        response = await validate(client, bearer(token))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Token expired"]}


# --- headers ----------------------------------------------------------------------------------


async def test_an_access_token_sent_as_bearer_is_invalid(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id)
    assert (await validate(client, api_key(token["secret"]))).status_code == 200

    response = await validate(client, bearer(token["secret"]))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Wrong token type for this header"]}


async def test_a_client_credential_jwt_sent_as_api_key_is_invalid(
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
    assert (await validate(client, bearer(token))).status_code == 200

    response = await validate(client, api_key(token))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Wrong token type for this header"]}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}, {"X-API-KEY": ""}],
    ids=["none", "basic", "empty bearer", "empty api key"],
)
async def test_no_token_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await validate(client, headers)

    assert response.status_code == 401
    [message] = response.json()["errors"]
    assert message.startswith("Missing token")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged(label: str, services: Services, settings: Settings, claims: dict[str, Any]) -> str:
    signer = services.signer
    now = int(utcnow().timestamp())
    if label == "alg none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': signer.kid})}.{_b64(claims)}."
    if label == "HS256 keyed with the public key":
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": signer.kid})
        payload = _b64(claims)
        mac = hmac.new(
            signer.public_key_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256
        ).digest()
        return f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    if label == "unknown kid":
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "not-ours"})
    if label == "wrong issuer":
        return signer.sign({**claims, "iss": "https://elsewhere.example"})
    if label == "expired":
        return signer.sign({**claims, "iat": now - 7200, "exp": now - 3600})
    if label == "not yet valid":
        return signer.sign({**claims, "nbf": now + 3600})
    if label == "issued in the future":
        return signer.sign({**claims, "iat": now + 3600})
    raise AssertionError(label)


FORGERIES = [
    "alg none",
    "HS256 keyed with the public key",
    "unknown kid",
    "wrong issuer",
    "expired",
    "not yet valid",
    "issued in the future",
]


@pytest.mark.parametrize("header", ["X-API-KEY", "Authorization"])
async def test_a_vendor_token_is_refused_with_what_validate_takes(
    header: str, client: httpx.AsyncClient, vendor: dict[str, str]
) -> None:
    token = vendor["x-access-token"]
    headers = api_key(token) if header == "X-API-KEY" else bearer(token)

    response = await validate(client, headers)

    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            "This is a vendor token: validate takes an access token in X-API-KEY, or a"
            " client-credential JWT in Authorization: Bearer"
        ]
    }


async def test_another_hs256_token_is_not_called_a_vendor_token(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    now = int(utcnow().timestamp())
    claims = {"type": "vendor", "sub": settings.vendor_client_id, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, "not the vendor key, long enough for HS256", algorithm="HS256")

    response = await validate(client, api_key(token))

    assert response.status_code == 401
    assert response.json() == {"errors": ["Unsupported token algorithm"]}


@pytest.mark.parametrize("label", FORGERIES)
async def test_forged_or_untimely_tokens_are_refused(
    label: str,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    token = await create_access_token(client, vendor, scene.tenant.id, role_ids=[scene.reader.id])
    genuine = jwt.decode(token["secret"], options={"verify_signature": False})
    assert (await validate(client, api_key(token["secret"]))).status_code == 200

    response = await validate(client, api_key(_forged(label, services, settings, genuine)))

    assert response.status_code == 401
    assert set(response.json()) == {"errors"}


# --- deletions, and the M2M switch ------------------------------------------------------------


@pytest.mark.parametrize("for_user", [True, False], ids=["user", "tenant"])
async def test_a_deleted_access_token_is_invalid_once_its_deletion_returns(
    for_user: bool, client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory
) -> None:
    scene = await build_scene(factory)
    user_id = scene.user.id if for_user else None
    token = await create_access_token(client, vendor, scene.tenant.id, user_id=user_id)
    kept = await create_access_token(client, vendor, scene.tenant.id, user_id=user_id)
    for each in (token, kept):  # warm: both are in every cache layer now
        for _ in range(2):
            assert (await validate(client, api_key(each["secret"]))).status_code == 200

    path = USER_ACCESS if for_user else TENANT_ACCESS
    await delete_token(client, vendor, path, token["id"], scene.tenant.id, user_id)

    response = await validate(client, api_key(token["secret"]))
    assert response.status_code == 401
    assert response.json() == {"errors": ["Token is not valid"]}
    assert (await validate(client, api_key(kept["secret"]))).status_code == 200


@pytest.mark.parametrize("for_user", [True, False], ids=["user", "tenant"])
async def test_a_deleted_credential_makes_its_jwts_invalid_once_its_deletion_returns(
    for_user: bool,
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    user_id = scene.user.id if for_user else None
    credential = await create_credential(
        client, vendor, scene.tenant.id, user_id=user_id, role_ids=[scene.reader.id]
    )
    token = credential_jwt(
        services, settings, credential, tenant_id=scene.tenant.id, user_id=user_id
    )
    for _ in range(2):
        assert (await validate(client, bearer(token))).status_code == 200

    path = USER_API if for_user else TENANT_API
    await delete_token(client, vendor, path, credential["clientId"], scene.tenant.id, user_id)

    response = await validate(client, bearer(token))
    assert response.status_code == 401
    assert response.json() == {"errors": ["Token is not valid"]}


async def test_deleting_a_user_invalidates_its_tokens_and_no_one_elses(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    colleague = await factory.user(scene.tenant.id, roles=[scene.reader])
    access = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    theirs = await create_access_token(client, vendor, scene.tenant.id, user_id=colleague.id)
    tenant_token = await create_access_token(client, vendor, scene.tenant.id)
    credential = await create_credential(client, vendor, scene.tenant.id, user_id=scene.user.id)
    jwt_token = credential_jwt(
        services, settings, credential, tenant_id=scene.tenant.id, user_id=scene.user.id
    )
    for headers in (api_key(access["secret"]), bearer(jwt_token)):
        assert (await validate(client, headers)).status_code == 200

    deleted = await client.delete(f"/identity/resources/users/v1/{scene.user.id}", headers=vendor)
    assert deleted.status_code == 200, deleted.text

    assert (await validate(client, api_key(access["secret"]))).status_code == 401
    assert (await validate(client, bearer(jwt_token))).status_code == 401
    assert (await validate(client, api_key(theirs["secret"]))).status_code == 200
    assert (await validate(client, api_key(tenant_token["secret"]))).status_code == 200


async def test_deleting_a_tenant_invalidates_every_token_in_it_and_no_other(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    tokens = [
        api_key((await create_access_token(client, vendor, scene.tenant.id))["secret"]),
        api_key(
            (await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id))[
                "secret"
            ]
        ),
    ]
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    tokens.append(bearer(credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)))
    elsewhere = await create_access_token(client, vendor, scene.other_tenant.id)
    for headers in tokens:
        assert (await validate(client, headers)).status_code == 200

    deleted = await client.delete(
        f"/tenants/resources/tenants/v1/{scene.tenant.id}", headers=vendor
    )
    assert deleted.status_code == 200, deleted.text

    for headers in tokens:
        assert (await validate(client, headers)).status_code == 401
    assert (await validate(client, api_key(elsewhere["secret"]))).status_code == 200


async def test_a_tenant_id_used_again_brings_back_none_of_the_deleted_tenants_tokens(
    client: httpx.AsyncClient, vendor: dict[str, str], services: Services
) -> None:
    tenant_id = f"acme-{uuid.uuid4().hex[:8]}"
    tenants = "/tenants/resources/tenants/v1"
    created = await client.post(tenants, headers=vendor, json={"tenantId": tenant_id, "name": "A"})
    assert created.status_code == 201, created.text
    old = await create_access_token(client, vendor, tenant_id)
    assert (await validate(client, api_key(old["secret"]))).status_code == 200
    assert (await client.delete(f"{tenants}/{tenant_id}", headers=vendor)).status_code == 200
    await finish_jobs(services)

    again = await client.post(tenants, headers=vendor, json={"tenantId": tenant_id, "name": "B"})
    assert again.status_code == 201, again.text
    new = await create_access_token(client, vendor, tenant_id)

    assert (await validate(client, api_key(new["secret"]))).status_code == 200
    assert (await validate(client, api_key(old["secret"]))).status_code == 401


async def test_a_user_id_used_again_brings_back_none_of_the_deleted_users_tokens(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    scene = await build_scene(factory)
    user_id = f"ada-{uuid.uuid4().hex[:8]}"
    users = "/identity/resources/users/v2"
    tenant = {**vendor, "frontegg-tenant-id": scene.tenant.id}

    async def create_user() -> None:
        body = {"id": user_id, "email": f"{uuid.uuid4().hex}@acme.test", "metadata": "{}"}
        response = await client.post(users, headers=tenant, json=body)
        assert response.status_code == 201, response.text

    await create_user()
    old = await create_access_token(client, vendor, scene.tenant.id, user_id=user_id)
    assert (await validate(client, api_key(old["secret"]))).status_code == 200
    deleted = await client.delete(f"/identity/resources/users/v1/{user_id}", headers=vendor)
    assert deleted.status_code == 200, deleted.text
    await finish_jobs(services)

    await create_user()
    new = await create_access_token(client, vendor, scene.tenant.id, user_id=user_id)

    assert (await validate(client, api_key(new["secret"]))).status_code == 200
    assert (await validate(client, api_key(old["secret"]))).status_code == 401


async def test_disabling_m2m_invalidates_every_token_and_enabling_restores_the_still_valid(
    client: httpx.AsyncClient,
    vendor: dict[str, str],
    factory: Factory,
    services: Services,
    settings: Settings,
) -> None:
    scene = await build_scene(factory)
    lasting = await create_access_token(client, vendor, scene.tenant.id, user_id=scene.user.id)
    deleted = await create_access_token(client, vendor, scene.tenant.id)
    expiring = await create_access_token(client, vendor, scene.tenant.id, minutes=1)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    jwt_token = credential_jwt(services, settings, credential, tenant_id=scene.tenant.id)
    survivors = [api_key(lasting["secret"]), bearer(jwt_token)]
    casualties = [api_key(deleted["secret"]), api_key(expiring["secret"])]
    for headers in survivors + casualties:
        assert (await validate(client, headers)).status_code == 200

    await configure(client, vendor, apiTokensEnabled=False)
    for headers in survivors + casualties:
        response = await validate(client, headers)
        assert response.status_code == 401
        assert response.json() == {"errors": ["Api tokens are disabled"]}
    await delete_token(client, vendor, TENANT_ACCESS, deleted["id"], scene.tenant.id)
    await configure(client, vendor, apiTokensEnabled=True)

    # Later, once the expiring token has expired:
    with freeze_time(utcnow() + timedelta(minutes=2), real_asyncio=True):
        for headers in survivors:
            assert (await validate(client, headers)).status_code == 200
        for headers in casualties:
            assert (await validate(client, headers)).status_code == 401


async def test_validation_reads_the_truth_for_a_row_changed_behind_the_caches_back(
    client: httpx.AsyncClient, vendor: dict[str, str], factory: Factory, services: Services
) -> None:
    """A cold cache asks PostgreSQL: a credential deleted by SQL alone is invalid."""
    scene = await build_scene(factory)
    credential = await create_credential(
        client, vendor, scene.tenant.id, role_ids=[scene.reader.id]
    )
    async with services.sessions() as session:
        await session.execute(
            sa.delete(ClientCredential).where(ClientCredential.client_id == credential["clientId"])
        )
        await session.commit()
    settings = services.settings

    response = await validate(
        client, bearer(credential_jwt(services, settings, credential, tenant_id=scene.tenant.id))
    )

    assert response.status_code == 401
